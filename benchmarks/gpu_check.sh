#!/usr/bin/env bash
# GPU check of issue 6 (Triton selective scan, --device cuda), for a machine with one
# CUDA GPU. Nothing here has been run yet: the session that wrote it had no GPU.
#
#   RESULTS=$OUT bash benchmarks/gpu_check.sh       # on the device machine ($OUT comes back)
#   cp <returned files> benchmarks/results/           # then commit them with the numbers
#
# Steps (each under its own timeout, so one slow step does not cost the others):
#   1. the GPU tests: Triton float / quantized scan vs the reference on CUDA, the exact
#      elementwise quantizer, vim_fmnist float and W4A4 on CUDA (Triton vs reference);
#   2. the scan kernel at vim_tiny's shape (batch 64, d 384, l 197, n 16): reference loop
#      vs Triton, float and quantized (issue target: Triton >= 20x the reference);
#   3. model forward, images/s, for vim_tiny and vim_small at 224x224, batch 64: float and
#      W4A4 qmamba (calibrated on 8 random images: a timing run), reference and Triton scan,
#      plus the no-scan floor.
# Writes at most 6 files to $RESULTS (default benchmarks/results): gpu_tests.log,
# scan_vim_tiny_b64_cuda.json, forward_vim_tiny_224_b64_cuda.json,
# forward_vim_small_224_b64_cuda.json, summary.json, and bench.log.
# Expected wall time on one H100: about 6 minutes (first Triton compiles and the build of
# the CPU extension that the ops tests' conftest does once included); not yet measured.
set -uo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${RESULTS:-benchmarks/results}
mkdir -p "$RESULTS"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-/tmp/qmamba_torch_extensions}
status=0

"$PY" - <<'EOF' || exit 1
import torch
assert torch.cuda.is_available(), "no CUDA GPU visible: this script is for a GPU machine"
import triton
print(f"torch {torch.__version__}, triton {triton.__version__}, {torch.cuda.get_device_name(0)}")
EOF

echo "== 1. GPU tests"
timeout 300 "$PY" -m pytest -q -x -p no:cacheprovider \
    tests/ops/test_scan_triton.py tests/cli/test_device.py tests/bench/test_bench.py \
    2>&1 | tee "$RESULTS/gpu_tests.log" || status=1

echo "== 2. scan kernel, vim_tiny shape, batch 64"
timeout 120 "$PY" -m qmamba.bench scan --device cuda --backends reference,triton \
    --batch 64 --dim 384 --length 197 --state 16 --repeats 10 \
    --out "$RESULTS/scan_vim_tiny_b64_cuda.json" > /dev/null 2>> "$RESULTS/bench.log" || status=1

echo "== 3. model forward, 224x224, batch 64"
for model in vim_tiny vim_small; do
    timeout 240 "$PY" -m qmamba.bench forward --device cuda --model "$model" --img-size 224 \
        --batch 64 --repeats 3 --backends noop,triton,reference --quantized qmamba --bits 4 4 \
        --calib 8 --out "$RESULTS/forward_${model}_224_b64_cuda.json" > /dev/null \
        2>> "$RESULTS/bench.log" || status=1
done

echo "== summary (images/s)"
RESULTS="$RESULTS" "$PY" - <<'EOF'
import json, os
from pathlib import Path

res = Path(os.environ["RESULTS"])
summary = {}
scan = res / "scan_vim_tiny_b64_cuda.json"
if scan.exists():
    r = json.loads(scan.read_text())
    summary["device"] = r["config"]["device_name"]
    for section in ("float_forward", "quantized_forward"):
        s = r[section]
        summary[f"scan_{section}"] = {k: s.get(k) for k in (
            "reference_images_per_s", "triton_images_per_s", "triton_speedup", "triton_max_abs_diff")}
    speedup = r["float_forward"]["triton_speedup"]
    summary["target_triton_20x_reference_vim_tiny_b64"] = speedup >= 20
    print(f"scan (vim_tiny shape, batch 64): Triton {speedup}x the reference (target >= 20x)")
for model in ("vim_tiny", "vim_small"):
    f = res / f"forward_{model}_224_b64_cuda.json"
    if not f.exists():
        print(f"{model}: no result")
        continue
    r = json.loads(f.read_text())
    row = {k: round(v, 1) for k, v in r.items() if k.endswith("_images_per_s")}
    row["quantize_seconds"] = round(r.get("quantize_seconds", float("nan")), 1)
    summary[f"forward_{model}"] = row
    print(model, row)
(res / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
EOF
exit $status
