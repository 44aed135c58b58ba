import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qmamba.quant.serialize import pack_codes, unpack_codes


@settings(derandomize=True, deadline=None, max_examples=40)
@given(st.integers(2, 16), st.integers(1, 300), st.integers(0, 1000))
def test_pack_unpack_round_trip(bits, numel, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2**bits, (numel,), generator=g)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == (numel * bits + 7) // 8
    assert torch.equal(unpack_codes(packed, bits, numel), codes)
