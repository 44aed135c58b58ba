"""Quantizer modules: calibrated state (scales, zero points, grids) around pure functions.

They are what `QuantPoint.quantizer` holds after calibration, one kind per file:
- `UniformQuantizer` / `WeightQuantizer` (uniform.py): static uniform affine, and
  per-output-channel symmetric weights;
- `LogQuantizer` (log.py): LtSQ's signed log grid for a tensor point (delta);
- `ScanQuantizer` (scan.py): the in-loop quantizer of the selective scan (A_bar,
  B_bar u, h), uniform or LtSQ grid, TGQ time groups;
- `SmoothedInput` / `SmoothedWeight` (smoothed.py): SmoothQuant-style smoothing;
- `TwinUniformQuantizer` (twin_uniform.py, PTQ4ViT), `LogSqrt2Quantizer`
  (log_sqrt2.py, RepQ-ViT);
- `CodedWeight` (coded.py): a reloaded weight, its integer codes.
"""
from qmamba.quant.quantizers.coded import CodedWeight
from qmamba.quant.quantizers.log import LogQuantizer
from qmamba.quant.quantizers.log_sqrt2 import LogSqrt2Quantizer
from qmamba.quant.quantizers.scan import ScanQuantizer
from qmamba.quant.quantizers.smoothed import SmoothedInput, SmoothedWeight
from qmamba.quant.quantizers.twin_uniform import TwinUniformQuantizer
from qmamba.quant.quantizers.uniform import UniformQuantizer, WeightQuantizer

__all__ = [
    "CodedWeight",
    "LogQuantizer",
    "LogSqrt2Quantizer",
    "ScanQuantizer",
    "SmoothedInput",
    "SmoothedWeight",
    "TwinUniformQuantizer",
    "UniformQuantizer",
    "WeightQuantizer",
]
