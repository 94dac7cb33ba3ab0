"""The project's error base: a mistake in user input or data, reported without a traceback."""

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input (file, data, config, option); the message names what and where, and what to do.

    The CLI prints these as one line and exits 1; every other exception is a bug and keeps
    its traceback.
    """
