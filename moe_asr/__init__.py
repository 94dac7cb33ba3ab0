"""moe_asr: Mixture-of-Experts Conformer speech recognition."""

__version__ = "0.1.0"
