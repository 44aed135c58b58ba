"""qmamba: post-training quantization of vision state-space models (Vim, VMamba)."""
from qmamba.checkpoint import load_checkpoint, save_checkpoint
from qmamba.errors import CheckpointError, ConfigError, DataError, QMambaError
from qmamba.loading import load_quantized
from qmamba.models import create_model, list_models, register_with_timm
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine import quantize
from qmamba.quant.serialize import save_quantized

register_with_timm()  # timm.create_model("vim_tiny") works after `import qmamba`

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "QMambaError",
    "QuantConfig",
    "create_model",
    "list_models",
    "load_checkpoint",
    "load_quantized",
    "quantize",
    "save_checkpoint",
    "save_quantized",
]
