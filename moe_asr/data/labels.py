"""Label vocabularies for auxiliary utterance labels (accent, noise, ...).

Index 0 of every vocabulary is ``unk``: used for a missing label, a label unseen
in training, label dropout, and label-free inference. The vocabulary is built
from the training data dir's ``utt2<name>`` files and saved inside the model package;
the labels the training augmentation records (``AUGMENT_LABELS``: noise type, SNR bucket,
reverberation) take their values from the config instead (``from_values``), so they are
known before any audio is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from moe_asr.errors import UserError

__all__ = ["UNK_LABEL", "AUGMENT_LABELS", "LabelVocab"]

UNK_LABEL = "unk"
# labels of the condition the training augmentation applied (moe_asr.data.augment)
AUGMENT_LABELS: tuple[str, ...] = ("noise", "snr", "reverb")


@dataclass
class LabelVocab:
    """name -> list of values; ``values[name][0] == "unk"``."""

    values: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_tables(cls, tables: dict[str, dict[str, str]], names: list[str]) -> LabelVocab:
        """Build from ``{"accent": {utt: label}}`` tables for the requested label names."""
        values: dict[str, list[str]] = {}
        for name in names:
            if name not in tables:
                hint = ""
                if name in AUGMENT_LABELS:
                    hint = (
                        "; or let the augmentation record it (data.augment.noise_prob > 0 "
                        "gives noise and snr, data.augment.reverb_prob > 0 gives reverb)"
                    )
                raise UserError(
                    f"label {name!r} was requested for routing guidance but the training data "
                    f"has no utt2{name} file (found: {', '.join(sorted(tables)) or 'none'})" + hint
                )
            seen = sorted({v for v in tables[name].values() if v != UNK_LABEL})
            values[name] = [UNK_LABEL, *seen]
        return cls(values)

    @classmethod
    def from_values(cls, values: dict[str, list[str]]) -> LabelVocab:
        """Build from known values per name (e.g. derived from the config): ``unk``, then
        the values in the given order (repeats and ``unk`` dropped)."""
        return cls(
            {
                name: [UNK_LABEL, *dict.fromkeys(v for v in vals if v != UNK_LABEL)]
                for name, vals in values.items()
            }
        )

    @property
    def names(self) -> list[str]:
        return list(self.values)

    def size(self, name: str) -> int:
        return len(self.values[name])

    def index(self, name: str, value: str | None) -> int:
        """Id of ``value``; a missing or unseen value maps to 0 (unk)."""
        if value is None:
            return 0
        try:
            return self.values[name].index(value)
        except ValueError:
            return 0

    def value(self, name: str, index: int) -> str:
        return self.values[name][index]

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.values.items()}

    @classmethod
    def from_dict(cls, data: dict[str, list[str]]) -> LabelVocab:
        for name, vals in data.items():
            if not vals or vals[0] != UNK_LABEL:
                raise UserError(f"label vocabulary {name!r} must start with {UNK_LABEL!r}")
        return cls({k: list(v) for k, v in data.items()})
