"""The InputRotation slot of QuantLinear: identity by default, exact folding when set."""
import pytest
import torch
import torch.nn.functional as F

from qmamba.models.vmamba_blocks import QuantLinear2d
from qmamba.nn.layers import QuantLinear
from qmamba.nn.rotation import InputRotation, idle_rotation_points
from qmamba.quant.methods.hadamard import hadamard_matrix, kronecker_factors, random_orthogonal


def _layer(cls, n_in=12, n_out=5, **kw):
    torch.manual_seed(0)
    return cls(n_in, n_out, **kw).eval()


def test_slot_is_identity_without_state():
    layer = _layer(QuantLinear)
    x = torch.randn(2, 7, 12)
    assert not layer.input_rotation.active
    assert not any("rotation" in k for k in layer.state_dict())
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


def test_rotation_and_folded_weight_keep_the_float_output():
    layer = _layer(QuantLinear)
    x = torch.randn(2, 7, 12) * torch.linspace(0.1, 20, 12)  # one wide channel
    ref = layer(x)
    s = torch.rand(12) + 0.5
    layer.input_rotation.set(hadamard_matrix(12), smooth=s, kind="hadamard")
    with torch.no_grad():
        layer.weight.copy_(layer.input_rotation.fold_into_weight(layer.weight))
    torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)
    # the input point sees (x / s) H: rotated, and rotated back exactly by H^T and s
    seen = []
    layer.input_quant.observer = seen.append
    layer(x)
    rotated = seen[0]
    assert not torch.allclose(rotated, x)
    torch.testing.assert_close((rotated @ layer.input_rotation.matrix.T) * s, x, atol=1e-4, rtol=1e-5)
    assert {"input_rotation.matrix", "input_rotation.smooth"} <= set(layer.state_dict())


def test_channel_first_layer_rotates_channels():
    layer = _layer(QuantLinear2d, 8, 3)
    x = torch.randn(2, 8, 4, 5)
    ref = layer(x)
    layer.input_rotation.set(random_orthogonal(8, 1))
    with torch.no_grad():
        layer.weight.copy_(layer.input_rotation.fold_into_weight(layer.weight))
    torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)


def test_offline_slot_does_nothing_at_run_time():
    slot = InputRotation()
    slot.set(hadamard_matrix(4), online=False)
    x = torch.randn(3, 4)
    assert torch.equal(slot(x), x) and slot.describe()["online"] is False


def test_layers_without_input_point_own_one_in_their_slot():
    layer = _layer(QuantLinear, quantize_input=False)
    assert layer.input_quant is None and layer.input_rotation.quant.tags == {"rotated"}
    assert idle_rotation_points(layer) == {id(layer.input_rotation.quant)}
    layer.input_rotation.set(hadamard_matrix(12))
    assert idle_rotation_points(layer) == set()
    seen = []
    layer.input_rotation.quant.observer = seen.append
    layer(torch.randn(2, 12))
    assert len(seen) == 1


@pytest.mark.parametrize("cls,n", [(QuantLinear, 48), (QuantLinear, 384), (QuantLinear2d, 96)])
def test_kronecker_slot_is_its_dense_reference_and_keeps_the_float_output(cls, n):
    """Fast path (factor by factor) against the reference (the dense product with the
    stored matrix), with smoothing, channels last and channels first."""
    layer = _layer(cls, n, 5)
    x = torch.randn(2, n, 3, 4) if cls is QuantLinear2d else torch.randn(2, 7, n)
    x = x * torch.linspace(0.1, 20, n).view((1, n, 1, 1) if cls is QuantLinear2d else (1, 1, n))
    with torch.no_grad():
        ref = layer(x)
    s = torch.rand(n) + 0.5
    slot = layer.input_rotation
    slot.set(hadamard_matrix(n, structured=True), smooth=s, kind="hadamard_kron", factors=kronecker_factors(n))
    with torch.no_grad():
        layer.weight.copy_(slot.fold_into_weight(layer.weight))
    fast, dense = slot.transform(x), slot.transform_reference(x)
    torch.testing.assert_close(fast, dense, atol=1e-5 * float(dense.abs().max()), rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref, atol=1e-4 * float(ref.abs().max()), rtol=1e-4)
    # the factors are rebuilt from (m, s), not stored: the state dict has the one matrix
    assert {k for k in layer.state_dict() if k.startswith("input_rotation.")} == {
        "input_rotation.matrix", "input_rotation.smooth"}
    assert slot.describe()["factors"] == list(kronecker_factors(n))


def test_kronecker_slot_rejects_factors_of_another_size_and_dense_slots_record_none():
    slot = InputRotation()
    with pytest.raises(ValueError, match="not the Kronecker Hadamard factors"):
        slot.set(hadamard_matrix(48, structured=True), factors=(4, 12))
    slot.set(hadamard_matrix(48))
    assert slot.factors is None and "factors" not in slot.describe()
    slot.set(hadamard_matrix(48, structured=True), factors=(12, 4))
    slot.set(hadamard_matrix(48))  # set again: the factor buffers go with the old matrix
    assert slot.factors is None and not hasattr(slot, "kron_p")
