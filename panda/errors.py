"""Errors for bad input: each carries a message a user can act on, printed without a traceback."""


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
