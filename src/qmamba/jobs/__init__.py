"""The jobs behind the CLI as library calls, one module per job, each a job dataclass in
and a result out:

- `run_quantize(QuantizeJob(...), out_dir)` -> `QuantizeResult`: full-precision and
  quantized accuracy of one model under one recipe, the per-point report, the saved
  quantized model (`jobs/quantize.py`).
- `run_eval(EvalJob(...), out)` -> `EvalJobResult`: accuracy of a float model or of a
  saved quantized model (`jobs/evaluate.py`).
- `run_demo(DemoJob(...), out_dir)` -> `DemoResult`: the built-in models x recipes x bit
  settings table (`jobs/demo.py`).

The steps they share sit beside them: `devices` (device names, bit widths, settings),
`models` (loading), `data` (calibration and evaluation splits), `evaluation`,
`calibration` (out-of-memory retries, NaN/inf explained, SQNR), `outputs` (the output
folder), `reporting`. Errors name the jobs' parameters (`qmamba.errors`); the CLI shows
them as its flags.
"""
from qmamba.jobs.demo import DemoJob, DemoResult, run_demo
from qmamba.jobs.evaluate import EvalJob, EvalJobResult, run_eval
from qmamba.jobs.quantize import QuantizeJob, QuantizeResult, run_quantize

__all__ = [
    "DemoJob",
    "DemoResult",
    "EvalJob",
    "EvalJobResult",
    "QuantizeJob",
    "QuantizeResult",
    "run_demo",
    "run_eval",
    "run_quantize",
]
