import numpy as np
import pytest
import soundfile as sf

from moe_asr.audio import AudioError, audio_info, load_audio


def _tone(sr: int, seconds: float = 0.5, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_8k_wav_is_resampled_to_16k(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, _tone(8000), 8000)
    wav = load_audio(path, 16000)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) == 8000  # 0.5 s at 16 kHz
    # the tone survives resampling: dominant frequency stays at 440 Hz
    spec = np.abs(np.fft.rfft(wav))
    assert abs(np.argmax(spec) * 16000 / len(wav) - 440) < 5


def test_stereo_flac_44k_is_mixed_down(tmp_path):
    path = tmp_path / "a.flac"
    left = _tone(44100)
    sf.write(path, np.stack([left, -left * 0.0 + left], axis=1), 44100)
    wav = load_audio(path, 16000)
    assert len(wav) == 8000
    ref = load_audio(tmp_path / "a.flac", 44100)
    np.testing.assert_allclose(ref, left, atol=1e-4)  # mean of two equal channels


def test_stereo_mean_of_opposite_channels_is_silence(tmp_path):
    path = tmp_path / "s.wav"
    x = _tone(16000)
    sf.write(path, np.stack([x, -x], axis=1), 16000, subtype="FLOAT")
    assert np.abs(load_audio(path)).max() < 1e-6


@pytest.mark.parametrize("ext", ["mp3", "ogg"])
def test_compressed_formats(tmp_path, ext):
    path = tmp_path / f"a.{ext}"
    sf.write(path, _tone(16000, 1.0), 16000)
    wav = load_audio(path, 16000)
    assert abs(len(wav) - 16000) < 1200  # codec padding/priming
    assert 0.1 < np.abs(wav).max() < 0.5


def test_segment(tmp_path):
    path = tmp_path / "a.wav"
    x = np.linspace(-0.5, 0.5, 16000, dtype=np.float32)
    sf.write(path, x, 16000, subtype="FLOAT")
    seg = load_audio(path, 16000, start=0.25, end=0.5)
    np.testing.assert_allclose(seg, x[4000:8000], atol=1e-6)
    with pytest.raises(AudioError, match="outside"):
        load_audio(path, 16000, start=2.0, end=3.0)


def test_errors_name_path_and_cause(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioError, match="does not exist") as e:
        load_audio(missing)
    assert str(missing) in str(e.value)

    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)

    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    with pytest.raises(AudioError, match="not a readable audio file"):
        load_audio(text)

    good = tmp_path / "good.wav"
    sf.write(good, _tone(16000, 1.0), 16000)
    truncated = tmp_path / "trunc.wav"
    truncated.write_bytes(good.read_bytes()[:20000])
    with pytest.raises(AudioError, match="truncated"):
        load_audio(truncated)
    with pytest.raises(AudioError, match="truncated"):
        audio_info(truncated)

    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(zero)


def test_audio_info(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, np.zeros((22050, 2), dtype=np.float32), 44100)
    info = audio_info(path)
    assert (info.sample_rate, info.channels, info.frames) == (44100, 2, 22050)
    assert info.duration == pytest.approx(0.5)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    import os
    import threading

    fifo = tmp_path / "in.wav"
    os.mkfifo(fifo)
    errors: list[Exception] = []

    def load(fn):
        try:
            fn(fifo)
        except AudioError as e:
            errors.append(e)

    for fn in (load_audio, audio_info):
        t = threading.Thread(target=load, args=(fn,), daemon=True)
        t.start()
        t.join(timeout=10)
        if t.is_alive():  # opening it would block until a writer appears: unblock and fail
            with open(fifo, "wb"):
                pass
            pytest.fail(f"{fn.__name__} opened the FIFO")
    assert len(errors) == 2 and all("FIFO" in str(e) for e in errors)
