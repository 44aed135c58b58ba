"""Q-VLM: activation-entropy grouping of blocks and the joint search of a group."""
import torch
import torch.nn as nn
from quant_helpers import image_loader

from qmamba.nn.point import QuantPoint
from qmamba.quant.config import QuantConfig
from qmamba.quant.engine import quantize
from qmamba.quant.engine.blocks import group_loss
from qmamba.quant.engine.build import build_quantizer
from qmamba.quant.engine.plan import PointPlan
from qmamba.quant.engine.search import search_group
from qmamba.quant.methods.entropy_groups import activation_entropy, group_blocks
from qmamba.quant.observers.act import ActObserver


def test_entropy_of_an_8_bit_histogram():
    assert activation_entropy(torch.zeros(100)) == 0.0
    two_values = torch.tensor([0.0, 1.0] * 500)
    assert abs(activation_entropy(two_values) - 1.0) < 1e-9
    g = torch.Generator().manual_seed(0)
    spread = activation_entropy(torch.rand(200000, generator=g))
    peaked = activation_entropy(torch.cat([torch.zeros(199000), torch.rand(1000, generator=g)]))
    assert spread > 7.9 and peaked < 1.0


def test_grouping_follows_the_entropy_proxy():
    assert group_blocks([1.0, 5.0, 2.0, 6.0]) == [[0], [1, 2], [3]]
    # same model, another proxy: other groups
    assert group_blocks([5.0, 1.0, 6.0, 2.0]) == [[0, 1], [2, 3]]
    assert group_blocks([5.0, 1.0, 6.0, 2.0], quantile=1.0) == [[0], [1], [2], [3]]
    assert group_blocks([9.0, 8.0, 7.0, 1.0], quantile=0.0, max_group=3) == [[0, 1, 2], [3]]
    assert group_blocks([3.0]) == [[0]]
    flat = [i for g in group_blocks([2.0, 7.0, 7.5, 1.0, 8.0], max_group=2) for i in g]
    assert flat == list(range(5))


class _Clip(nn.Module):
    """A block that only quantizes its input."""

    def __init__(self):
        super().__init__()
        self.q = QuantPoint("linear_input")

    def forward(self, x):
        return self.q(x)


class _Threshold(nn.Module):
    """The next block: only values above 2 pass (so only the tail of its input matters)."""

    def forward(self, x):
        return torch.relu(x - 2.0)


def _search_clip(x, blocks, cfg):
    """Calibrate blocks[0]'s point on x, search it on the output of `blocks`; return the
    chosen clip and the error at the output of the two-block model."""
    clip_block = blocks[0]
    plan = PointPlan("q", clip_block.q, bits=3, observer=ActObserver("minmax"))
    plan.observer(x)
    clip_block.q.quantizer = build_quantizer(plan, cfg, {})
    target = x
    for b in blocks[1:]:
        target = b(target)
    search_group(blocks, [plan], cfg, {}, [((x,), {})], [((target,), {})])
    two = [clip_block, _Threshold()]
    return plan.info["clip"], group_loss(two, [((x,), {})], [((_Threshold()(x),), {})])


def test_the_group_search_scores_the_output_of_the_whole_group():
    g = torch.Generator().manual_seed(0)
    x = -torch.log(torch.rand(4096, generator=g))  # exponential: a long tail
    cfg = QuantConfig.from_recipe("qvlm", 3, 3).replace(**{"search.candidates": (1.0, 0.85, 0.7, 0.55, 0.4)})
    alone_clip, alone_loss = _search_clip(x, [_Clip()], cfg)
    joint_clip, joint_loss = _search_clip(x, [_Clip(), _Threshold()], cfg)
    # alone, clipping the tail helps the bulk; seen through the next block the tail is
    # all that matters: the joint search keeps more of it
    assert alone_clip < 1.0 and joint_clip > alone_clip
    assert joint_loss < alone_loss


def test_qvlm_groups_blocks_by_the_measured_entropy_and_searches_groups(vmamba_model):
    cfg = QuantConfig.from_recipe("qvlm", 4, 4, calib_size=8).replace(
        **{"search.candidates": (1.0, 0.8), "search.samples": 4})
    q = quantize(vmamba_model, cfg, image_loader(8, 32))
    info = q.qmamba_info
    entropies, groups = info["block_entropy_bits"], info["block_groups"]
    assert len(entropies) == len(vmamba_model.quant_blocks())
    assert groups == group_blocks(entropies, cfg.vit_ptq.entropy_quantile, cfg.vit_ptq.max_group)
    assert any(len(grp) > 1 for grp in groups)
    searched = [e for e in info["points"].values() if "search_group" in e]
    assert searched and all(e["search_group"] in groups for e in searched)
    assert any(len(e["search_group"]) > 1 for e in searched)
