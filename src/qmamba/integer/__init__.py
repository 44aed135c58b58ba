"""The integer backend: run a saved quantized model with integer arithmetic on a CPU.

    from qmamba.quant.serialize import load_quantized
    from qmamba.integer import to_integer, describe

    model = to_integer(load_quantized("runs/vim_tiny-qmamba-W8A8/model"))
    print(describe(model))  # which layers run integer, and why the others do not
    logits = model(images)

Linear and conv layers become int8 x int8 -> int32 GEMMs on the integer codes, the
calibrated scales applied once per output, weights held as int8 codes
(`qmamba.integer.layers`, `qmamba.integer.gemm`); the selective scan runs on the codes of
u, delta, B_bar u, C and h, LtSQ's A_bar as shifts (`qmamba.integer.scan_plan`). Layers
with bit widths above 8, points left in float or quantizers without an integer form keep
the simulated (fake-quantized float) path, and `model.integer_layers` says which and why.
The simulated model stays the reference: the two agree up to float32 rounding
(tests/integer).
"""
from qmamba.integer.convert import LayerRecord, describe, layer_table, to_integer

__all__ = ["LayerRecord", "describe", "layer_table", "to_integer"]
