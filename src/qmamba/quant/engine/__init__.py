"""The calibration engine: `quantize(model, config, calib_loader)`.

- `algorithm.py`: `quantize()`, the algorithm as named steps, and the list of mechanisms;
- `steps.py`: the steps (trunk, stem, block groups, head) and the state they share;
- `plan.py`: which points get a quantizer at how many bits, in which block;
- `observe.py`: observers per point, and `observing(plans)`, the calibration context;
- `build.py`: a point's quantizer from its observer, for one clipping candidate;
- `search.py`: the block-wise clipping search;
- `blocks.py`: running blocks on cached inputs;
- `mechanism.py`: the hooks through which a method takes part in calibration.
"""
from qmamba.quant.engine.algorithm import collect_calibration_images, quantize

__all__ = ["collect_calibration_images", "quantize"]
