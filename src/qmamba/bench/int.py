"""Integer backend benchmark: the float model against the integer one, in one run.

    python -m qmamba.bench int --model vim_tiny [--batch 8 --threads 2 --repeats 5
                               --calib 8 --recipes qmamba minmax --settings W8A8 W4A4
                               --simulated --isa native|avx2 --models-dir DIR --out FILE]

Builds the model with seeded random weights, quantizes it with each recipe and setting on
`--calib` random images (a timing run, not an accuracy run: `search.samples` 2), saves it
and reloads it twice: as the simulated model (`load_quantized`) and on the integer backend
(`to_integer(load_quantized(...))`). The float model (compiled scan) and every integer
model (and, with `--simulated`, every simulated one) take turns in each repeat, so all
see the same machine load. Prints one JSON object (and writes it to --out): ms per image
(median and minimum), `<recipe>_<setting>_speedup` = float time / integer time (medians),
`w8a8_speedup` / `w4a4_speedup` (the `qmamba` recipe's, else the first recipe's), the
weights' bytes in memory (`qmamba.integer.memory.weight_bytes`) against the float model's,
the largest logit difference between the integer and simulated models on the timed batch,
and the CPU: PyTorch's capability, the ISA flags, the GEMM paths and the kernels' level.

`--isa avx2` reruns the benchmark in a child process with the AVX2 path forced for
oneDNN, PyTorch's own kernels, MKL and the integer kernels (ONEDNN_MAX_CPU_ISA=AVX2,
ATEN_CPU_CAPABILITY=avx2, MKL_ENABLE_INSTRUCTIONS=AVX2, QMAMBA_INT_ISA=avx2): the float
model then runs on AVX2 as well, as on an AVX2-only CPU.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile

import torch

AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
            "MKL_ENABLE_INSTRUCTIONS": "AVX2", "QMAMBA_INT_ISA": "avx2"}
CHILD = "QMAMBA_BENCH_INT_CHILD"


def cpu_info() -> dict:
    from qmamba.integer.gemm import gemm_paths
    from qmamba.ops.int_extension import kernel_isa

    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
    return {"cpu": model, "isa_flags": sorted(f for f in wanted if f in flags),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "gemm_paths": gemm_paths(), "int_kernels_isa": kernel_isa(),
            "env": {k: os.environ.get(k) for k in AVX2_ENV},
            # False under the portable pins (`python -m qmamba.bench int` without --native):
            # oneDNN off, so `torch._int_mm` and the float convs leave their fast paths
            "onednn_enabled": torch.backends.mkldnn.enabled}


def _quantize(model, recipe: str, setting: str, calib: int, shape, folder: str):
    """(simulated, integer) models of `recipe` at `setting`, through a save and a reload
    (a model already saved in `folder` is reused: the AVX2 run times the same models)."""
    from qmamba.bench.calibration import random_image_batches
    from qmamba.integer import to_integer
    from qmamba.quant.config import QuantConfig
    from qmamba.quant.engine import quantize
    from qmamba.quant.serialize import load_quantized, save_quantized

    path = os.path.join(folder, f"{recipe}-{setting}")
    if os.path.isfile(os.path.join(path, "quant.json")):
        return load_quantized(path), to_integer(load_quantized(path))
    w, a = (int(v) for v in setting.upper().lstrip("W").split("A"))
    cfg = QuantConfig.from_recipe(recipe, w, a, calib_size=calib)
    if cfg.search.enabled:
        cfg = cfg.replace(**{"search.samples": min(2, calib)})
    images = [(b, None) for b in random_image_batches(shape, calib, 8)]
    qmodel = quantize(copy.deepcopy(model), cfg, images)
    save_quantized(qmodel, path)
    return load_quantized(path), to_integer(load_quantized(path))


def run(args) -> dict:
    import qmamba
    from qmamba.bench.scan import _time_pair
    from qmamba.integer import describe
    from qmamba.integer.memory import tensor_bytes, weight_bytes

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = qmamba.create_model(args.model).eval()
    shape = model.default_cfg["input_size"]
    x = torch.randn(args.batch, *shape, generator=torch.Generator().manual_seed(2))
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.models_dir or tmp
        for recipe in args.recipes:
            for setting in args.settings:
                models[f"{recipe}_{setting}"] = _quantize(model, recipe, setting, args.calib, shape, folder)

    def runner(net):
        def fn():
            with torch.no_grad():
                return net(x)
        return fn

    fns = {"float": runner(model)}
    for key, (sim, integer) in models.items():
        fns[f"int_{key}"] = runner(integer)
        if args.simulated:
            fns[f"simulated_{key}"] = runner(sim)
    times, outputs = _time_pair(fns, args.repeats)
    result = {"config": {**vars(args), "input": [args.batch, *shape], "torch": torch.__version__},
              "cpu": cpu_info(), "float_weight_bytes": weight_bytes(model),
              "float_tensor_bytes": tensor_bytes(model)}
    for name, ts in times.items():
        result[f"{name}_ms_per_image"] = round(1000 * statistics.median(ts) / args.batch, 3)
        result[f"{name}_min_ms_per_image"] = round(1000 * min(ts) / args.batch, 3)
    float_t = statistics.median(times["float"])
    for key, (sim, integer) in models.items():
        result[f"{key}_speedup"] = round(float_t / statistics.median(times[f"int_{key}"]), 3)
        if args.simulated:
            result[f"{key}_simulated_over_float"] = round(statistics.median(times[f"simulated_{key}"]) / float_t, 3)
        with torch.no_grad():
            sim_out = sim(x)
        diff = (outputs[f"int_{key}"] - sim_out).abs()
        result[f"{key}_max_logit_diff_vs_simulated"] = float(diff.max())
        result[f"{key}_top1_agree_vs_simulated"] = float((outputs[f"int_{key}"].argmax(1) == sim_out.argmax(1)).float().mean())
        result[f"{key}_weight_bytes"] = weight_bytes(integer)
        result[f"{key}_weight_bytes_over_float"] = round(weight_bytes(integer) / result["float_weight_bytes"], 4)
        result[f"{key}_tensor_bytes_over_float"] = round(tensor_bytes(integer) / result["float_tensor_bytes"], 4)
        result[f"{key}_layers"] = describe(integer).splitlines()
    for setting in ("W8A8", "W4A4"):
        recipe = "qmamba" if "qmamba" in args.recipes else args.recipes[0]
        if f"{recipe}_{setting}_speedup" in result:
            result[f"{setting.lower()}_speedup"] = result[f"{recipe}_{setting}_speedup"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qmamba.bench int", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vim_tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calib", type=int, default=8, help="random calibration images (timing only)")
    parser.add_argument("--recipes", nargs="+", default=["qmamba", "minmax"])
    parser.add_argument("--settings", nargs="+", default=["W8A8", "W4A4"])
    parser.add_argument("--simulated", action="store_true", help="also time the simulated models")
    parser.add_argument("--isa", choices=("native", "avx2"), default="native",
                        help="avx2: force the AVX2 path everywhere (a child process)")
    parser.add_argument("--models-dir", default=None, metavar="DIR",
                        help="keep the quantized models here and reuse them when present")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the JSON here")
    args = parser.parse_args(argv)
    if not torch.backends.mkldnn.enabled:
        print("qmamba.bench int: the portable pins turn oneDNN off, which takes torch._int_mm and "
              "the float convs off their fast paths; pass --native before `int` to time what "
              "users run", file=sys.stderr)
    if args.isa == "avx2" and os.environ.get(CHILD) != "1":
        env = {**os.environ, **AVX2_ENV, CHILD: "1"}
        argv = sys.argv[1:] if argv is None else list(argv)
        if "int" in argv:  # run as `python -m qmamba.bench [--native] int ...`
            argv = argv[argv.index("int") + 1:]
        # the child runs as this process does: natively (--native) or under the portable pins
        native = ["--native"] if torch.backends.mkldnn.enabled else []
        return subprocess.call([sys.executable, "-m", "qmamba.bench", *native, "int", *argv], env=env)
    from qmamba.bench.scan import write_report

    write_report(run(args), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
