"""qmamba: post-training quantization of vision state-space models (Vim, VMamba)."""
from qmamba.errors import CheckpointError, ConfigError, DataError, QMambaError
from qmamba.models import create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "QMambaError",
    "create_model",
    "list_models",
]
