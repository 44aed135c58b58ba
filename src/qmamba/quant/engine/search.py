"""The block-wise clipping search: coordinate descent over a group's points."""
from __future__ import annotations

from qmamba.quant.engine.blocks import group_loss
from qmamba.quant.engine.build import build_quantizer, search_candidates, searchable


def search_group(blocks, plans, config, directions, inputs, targets, weights=None, group=None) -> None:
    """Coordinate search point by point in forward order (`vit_ptq.search_rounds` sweeps
    over `search.candidates`, then with `search.refine` one sweep around each choice),
    each candidate scored by the error of the output of the whole group of blocks against
    the float model's (`weights`: per-element weights of that error, or None). `group`:
    the blocks' indices, recorded in the points' info (grouped recipes)."""
    points = [p for p in plans if searchable(p, config)]
    for p in points if group is not None else ():
        p.info["search_group"] = list(group)
    chosen = {id(p): search_candidates(p, config)[0] for p in points}
    # the loss of the blocks as they stand: computed once, then carried from point to point
    # (after a point's search the blocks hold its best quantizer, whose loss is known)
    current = group_loss(blocks, inputs, targets, weights) if points else 0.0
    sweeps = [None] * config.vit_ptq.search_rounds + ([config.search.refine] if config.search.refine else [])
    for refine in sweeps:
        for p in points:
            best_key = chosen[id(p)]
            best_q, best_loss = p.point.quantizer, current
            tried = search_candidates(p, config) if refine is None else refined(best_key, refine)
            for key in tried:
                if key == chosen[id(p)]:
                    continue
                p.point.quantizer = build_quantizer(p, config, directions, key)
                loss = group_loss(blocks, inputs, targets, weights)
                if loss < best_loss * (1.0 - config.search.min_gain):
                    best_key, best_loss, best_q = key, loss, p.point.quantizer
            p.point.quantizer = best_q
            current = best_loss
            chosen[id(p)] = best_key
            p.info["clip"] = list(best_key) if isinstance(best_key, tuple) else best_key


def refined(key, step: float) -> list:
    """The refining sweep's candidates around a chosen clipping ratio: key - step and
    key + step within (0, 1]; none for the twin-uniform points' (D1, exponent) keys."""
    if not isinstance(key, float | int) or isinstance(key, bool):
        return []
    return [r for r in (round(float(key) - step, 6), round(float(key) + step, 6)) if 0.0 < r <= 1.0]
