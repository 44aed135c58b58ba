"""Model families. Importing this package registers every variant."""
from qmamba.models import (
    builtin,  # noqa: F401
    vim,  # noqa: F401
    vmamba,  # noqa: F401
)
from qmamba.models.registry import create_model, list_models, register_with_timm  # noqa: F401

__all__ = ["create_model", "list_models"]
