"""qmamba: post-training quantization of vision state-space models (Vim, VMamba)."""
from qmamba.errors import CheckpointError, ConfigError, DataError, QMambaError
from qmamba.models import create_model, list_models, register_with_timm

register_with_timm()  # timm.create_model("vim_tiny") works after `import qmamba`

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "QMambaError",
    "create_model",
    "list_models",
]
