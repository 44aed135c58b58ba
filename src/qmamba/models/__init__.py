"""Model families. Importing this package registers every variant."""
from qmamba.models import vim  # noqa: F401
from qmamba.models import vmamba  # noqa: F401
from qmamba.models import builtin  # noqa: F401
from qmamba.models.registry import create_model, list_models, register_with_timm

__all__ = ["create_model", "list_models"]
