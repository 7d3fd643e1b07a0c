"""Errors the command line reports as one line, without a traceback: bad input (with what to do) and interruptions."""

import errno

from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue


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


def as_bad_input(error: BaseException) -> PandaError | None:
    """``error`` as the one line of bad input it is: itself (a :class:`PandaError`), a full disk or an unwritable
    directory, a key the config lacks (with what to do); ``None`` for any other error."""
    if isinstance(error, PandaError):
        return error
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return ConfigError(
            f"cannot write {error.filename or 'a result'}: {error.strerror}; make room, then run the same command "
            "again (training resumes from its last checkpoint)"
        )
    if isinstance(error, OSError) and error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ConfigError(f"{error.filename or 'a file'}: {error.strerror}; fix its permissions, or use another one")
    if isinstance(error, (MissingMandatoryValue, ConfigKeyError, ConfigAttributeError)) and error.full_key:
        reason = str(error.msg).splitlines()[0]
        return ConfigError(f"the config has no value for {error.full_key}, which this command needs ({reason})")
    return None
