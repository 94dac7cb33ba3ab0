"""Decoding: CTC greedy, CTC prefix beam (+ KenLM), joint CTC/attention beam search,
attention rescoring; batch decoding of data dirs; transcription of files; word timings.

Main entry points: ``Recognizer`` (features -> transcripts), ``decode_datadir``
(data dir -> hyp.txt, nbest.txt, errors.txt, decode.json), ``Transcriber``
(audio files or arrays -> text, confidence, word timestamps, segments, accent) with its
output formats (``formats``: txt, json, srt, vtt, tsv), ``load_model`` (a ``model.pt``
package or an exported ``.onnx``, run by onnxruntime in the CTC modes), and
``StreamingRecognizer`` (audio pieces -> partial results per chunk -> final result,
streaming models).
"""

from moe_asr.decode.align import WordTiming, align_words
from moe_asr.decode.batch import DecodeSummary, decode_datadir
from moe_asr.decode.ctc import CtcBeamDecoder, DecodeError, Hypothesis, ctc_greedy
from moe_asr.decode.formats import OUTPUT_FORMATS, OutputWriter, format_result
from moe_asr.decode.joint import CtcPrefixScorer, joint_beam_search
from moe_asr.decode.onnx import load_model
from moe_asr.decode.rescore import attention_rescore
from moe_asr.decode.search import MODES, Recognition, Recognizer
from moe_asr.decode.streaming import PartialResult, StreamingRecognizer, StreamResult
from moe_asr.decode.transcribe import FileResult, Segment, Transcriber, collect_inputs

__all__ = [
    "MODES",
    "Hypothesis",
    "DecodeError",
    "ctc_greedy",
    "CtcBeamDecoder",
    "CtcPrefixScorer",
    "joint_beam_search",
    "attention_rescore",
    "Recognition",
    "Recognizer",
    "DecodeSummary",
    "decode_datadir",
    "WordTiming",
    "align_words",
    "FileResult",
    "Segment",
    "Transcriber",
    "collect_inputs",
    "StreamingRecognizer",
    "PartialResult",
    "StreamResult",
    "OUTPUT_FORMATS",
    "OutputWriter",
    "format_result",
    "load_model",
]
