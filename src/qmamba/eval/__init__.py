"""Evaluation: top-1 / top-5 accuracy with exact counting."""
from qmamba.eval.evaluate import EvalResult, evaluate

__all__ = ["EvalResult", "evaluate"]
