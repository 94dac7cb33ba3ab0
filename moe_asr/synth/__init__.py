"""The embedded synthetic accented, noisy English corpus (libespeak-ng through ctypes).

Modules: ``espeak`` (binding + fork server), ``accents`` (accent table, families, the
default set), ``voices`` (speakers, voice check), ``text`` (sentence pool), ``noise`` (noise conditions at an
SNR), ``reverb`` (simulated room impulse responses), ``corpus`` (planning and building a Kaldi
data dir in parallel). ``noise`` and ``reverb`` also serve the training augmentation.
Nothing is imported here: the espeak server imports this package and must stay lean.
"""

__all__: list[str] = []
