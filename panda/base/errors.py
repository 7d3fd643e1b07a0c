"""Errors the command line reports as one line, without a traceback: bad input (with what to do) and interruptions."""


class PandaError(Exception):
    """Base class of the errors the command line reports as plain messages."""


class ConfigError(PandaError):
    """An unknown layer, an out-of-range rank or index, a mismatched factors file."""


class WeightsError(PandaError):
    """Missing, unreadable or mismatched generator weights."""


class DivergenceError(PandaError):
    """Training whose loss or factors became NaN or infinite."""


class FeatureError(PandaError):
    """Generator features that cannot be factorised (NaN or infinite values)."""


class BusyError(PandaError):
    """A run directory in use by another process."""


class Interrupted(Exception):  # noqa: N818 (not an error: the run was stopped)
    """A run stopped by a signal (``SIGTERM`` from ``timeout`` or a scheduler, Ctrl-C); the command line exits
    with ``exit_code`` (128 + the signal's number)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
