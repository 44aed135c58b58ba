"""Backend selection, the build fallback and the benchmark entry point."""
from __future__ import annotations

import importlib.util
import json
import warnings

import pytest
import torch

from qmamba import ops
from qmamba.ops import backend


def test_scan_backend_context_manager():
    assert ops.get_scan_backend() == "auto"
    with ops.scan_backend("reference"):
        assert ops.get_scan_backend() == "reference"
        with ops.scan_backend("compiled"):
            assert ops.get_scan_backend() == "compiled"
        assert ops.get_scan_backend() == "reference"
    assert ops.get_scan_backend() == "auto"
    with pytest.raises(ValueError, match="unknown scan backend"):
        with ops.scan_backend("cuda"):
            pass
    assert ops.get_scan_backend() == "auto"


def test_dispatch(monkeypatch, make_inputs):
    assert ops.compiled_available()
    calls = []
    for name in ("selective_scan_compiled", "selective_scan_reference",
                 "quantized_scan_compiled", "quantized_scan_reference"):
        real = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda *a, _n=name, _f=real, **k: calls.append(_n) or _f(*a, **k))
    x = make_inputs(1, 2, 3, 2, dtype=torch.float32)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"])
    ops.selective_scan(*args)
    ops.quantized_scan(*args)
    with ops.scan_backend("reference"):
        ops.selective_scan(*args)
        ops.quantized_scan(*args)
    with ops.scan_backend("compiled"):
        ops.selective_scan(*args)
    assert calls == ["selective_scan_compiled", "quantized_scan_compiled",
                     "selective_scan_reference", "quantized_scan_reference",
                     "selective_scan_compiled"]
    # tensors that are not on the CPU (CUDA in practice; "meta" here) use the reference
    meta = torch.empty(1, device="meta")
    assert backend.resolve(meta) == "reference"
    with ops.scan_backend("compiled"), pytest.raises(RuntimeError, match="CPU tensors only"):
        backend.resolve(meta)


@pytest.fixture
def broken_build(monkeypatch):
    def fail():
        raise RuntimeError("Error building extension: no C++ compiler (test)")

    monkeypatch.setattr(backend, "_build_extension", fail)
    backend._reset_for_tests()
    yield
    monkeypatch.undo()
    backend._reset_for_tests()  # the next use loads the real (cached) build again


def test_fallback_warns_once_when_the_build_fails(broken_build, make_inputs):
    x = make_inputs(1, 2, 4, 3, dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        out = ops.selective_scan(**x, delta_softplus=True)
    assert not ops.compiled_available()
    assert "no C++ compiler" in backend.build_error()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        out2 = ops.selective_scan(**x, delta_softplus=True)
        y, _ = ops.quantized_scan(x["u"], x["delta"].abs(), x["A"], x["B"], x["C"])
    torch.testing.assert_close(out, out2)
    with ops.scan_backend("reference"):
        torch.testing.assert_close(out, ops.selective_scan(**x, delta_softplus=True))
    with ops.scan_backend("compiled"), pytest.raises(RuntimeError, match="unavailable"):
        ops.selective_scan(**x)


def test_extension_name_tracks_the_source():
    name = backend.extension_name()
    assert name.startswith("qmamba_selective_scan_") and name == backend.extension_name()
    assert "-march=native" not in backend.EXTRA_CFLAGS and "-ffast-math" not in backend.EXTRA_CFLAGS


def test_bench_dispatcher(capsys):
    from qmamba.bench.__main__ import main

    rc = main(["scan", "--batch", "2", "--dim", "4", "--length", "5", "--state", "3",
               "--threads", "1", "--repeats", "1"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    for section in ("float_forward", "quantized_forward"):
        for key in ("reference_ms_per_image", "compiled_ms_per_image", "speedup"):
            assert report[section][key] > 0
        assert report[section]["max_abs_diff"] < 1e-4
    if importlib.util.find_spec("qmamba.bench.forward") is None:
        assert main(["forward"]) == 2
        assert "not available yet" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["no-such-benchmark"])


def test_noop_backend_is_the_benchmark_floor():
    import torch

    from qmamba import ops

    u = torch.randn(2, 4, 5)
    with ops.scan_backend("noop"):
        out, last = ops.selective_scan(u, u, -torch.ones(4, 3), torch.randn(2, 3, 5), torch.randn(2, 3, 5),
                                       return_last_state=True)
    assert torch.equal(out, torch.zeros_like(u)) and last.shape == (2, 4, 3)
