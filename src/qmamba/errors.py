"""User-facing errors: one clear message naming the problem and what to do."""


class QMambaError(Exception):
    """An error the user can act on; the CLI prints its message without a traceback."""


class CheckpointError(QMambaError):
    """A checkpoint file is missing, corrupt, unsafe, or does not fit the model."""


class ConfigError(QMambaError):
    """A bad bit width, recipe name or option combination."""


class DataError(QMambaError):
    """A dataset path, folder layout or image that cannot be used."""
