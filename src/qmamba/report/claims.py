"""Claims about recipes ('qmamba beats minmax', 'TGQ helps'), judged on per-image results
of several calibration seeds with a paired bootstrap interval (`qmamba.report.stats`).

A *run* is one evaluation as a dict: `model`, `recipe`, `setting` ('W4A4'; 'FP' for the
float model), `seed` (the calibration seed; None for the float model, which has none),
`num_images`, and `hits1`: which images it got top-1 right, in the evaluation split's
order, as a bool array or packed (`pack_hits`). `run_record` builds one from an
`EvalResult`; the accuracy benchmark (`qmamba.bench.accuracy`) and the demo keep such
runs. A claim compares recipe A with recipe B on every model and setting where both ran,
on the seeds both ran (the float model's one evaluation stands for every seed), over the
same images: `judge_claims` gives, per (model, setting, claim), A - B in points, the
interval and the verdict (wins / ties / loses: A against B).
"""
from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qmamba.report.stats import DEFAULT_LEVEL, DEFAULT_RESAMPLES, paired_differences

__all__ = ["ABLATIONS", "HITS_ENCODING", "METHOD", "Claim", "find_claim", "judge_claims", "pack_hits", "run_record",
           "standard_claims", "unpack_hits"]

HITS_ENCODING = "one bit per image in evaluation order (numpy.packbits, big-endian bits), base64"
METHOD = "qmamba"
FLOAT = "fp"


@dataclass(frozen=True)
class Claim:
    """'A beats B' (`name` says it in words); judged as A - B."""

    name: str
    a: str
    b: str


# the ablations, when both recipes are registered (qmamba = base + LtSQ + TGQ;
# qmamba_no_ltsq = base + TGQ; qmamba_no_tgq = base + LtSQ)
ABLATIONS = (
    Claim("LtSQ helps", "qmamba", "qmamba_no_ltsq"),
    Claim("TGQ helps", "qmamba", "qmamba_no_tgq"),
    Claim("LtSQ helps on the base", "qmamba_no_tgq", "qmamba_base"),
    Claim("TGQ helps on the base", "qmamba_no_ltsq", "qmamba_base"),
)


def standard_claims(recipes: Iterable[str]) -> list[Claim]:
    """`qmamba` against every other recipe of `recipes` ('qmamba vs minmax', also 'qmamba
    vs fp' when the float model is among them), then the ablations whose two recipes are
    both in `recipes`."""
    names = list(dict.fromkeys(recipes))
    others = [r for r in names if r != METHOD and not _extension(r)]
    claims = [Claim(f"{METHOD} vs {r}", METHOD, r) for r in others] if METHOD in names else []
    claims += [c for c in ABLATIONS if c.a in names and c.b in names]
    return claims + _extension_claims(names)


def _extension(name: str) -> bool:
    """Whether `name` is another registered method than `qmamba` or one's ablation row
    (judged by `_extension_claims`, not against `qmamba` one by one)."""
    from qmamba.quant.recipes import get_recipe, list_recipes

    if name not in list_recipes() or name == METHOD:
        return False
    recipe = get_recipe(name)
    return recipe.group == "method" or recipe.ablates is not None


def _extension_claims(names: list[str]) -> list[Claim]:
    """For every other registered method among `names` (e.g. `qmamba_plus`): it against
    `qmamba` and the float model, then each registered ablation row of it ('qmamba_plus:
    with the rotations': the full recipe against the row that leaves them out)."""
    from qmamba.quant.recipes import get_recipe, list_recipes

    registered = set(list_recipes())
    methods = [r for r in names if r in registered and r != METHOD and get_recipe(r).group == "method"]
    claims = []
    for m in methods:
        claims += [Claim(f"{m} vs {other}", m, other) for other in (METHOD, FLOAT) if other in names]
        for r in names:
            ablates = get_recipe(r).ablates if r in registered else None
            if ablates is not None and ablates[0] == m:
                claims.append(Claim(f"{m}: with {ablates[1]}", m, r))
    return claims


def pack_hits(hits) -> str:
    """Per-image bools (array, list or CPU tensor) as text (HITS_ENCODING)."""
    bits = np.asarray(hits, dtype=bool).ravel()
    return base64.b64encode(np.packbits(bits).tobytes()).decode("ascii")


def unpack_hits(text: str, num_images: int) -> np.ndarray:
    """The bool vector `pack_hits` packed (`num_images` of them)."""
    raw = np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype=np.uint8)
    if raw.size != (num_images + 7) // 8:
        raise ValueError(f"packed hits hold {raw.size * 8} bits, not the {num_images} images of the run")
    return np.unpackbits(raw, count=num_images).astype(bool)


def run_record(model: str, recipe: str, setting: str, seed: int | None, result) -> dict:
    """A run (module docstring) from an `EvalResult` that kept its per-image hits."""
    if result.hits1 is None:
        raise ValueError("the evaluation kept no per-image hits")
    record = {"model": model, "recipe": recipe, "setting": setting, "seed": seed,
              "top1": result.top1, "top5": result.top5, "correct1": result.correct1,
              "correct5": result.correct5, "num_images": result.num_images,
              "hits1": pack_hits(result.hits1.cpu().numpy())}
    if result.hits5 is not None:
        record["hits5"] = pack_hits(result.hits5.cpu().numpy())
    return record


def _hits(run: Mapping, key: str = "hits1") -> np.ndarray:
    value = run[key]
    n = int(run["num_images"])
    hits = unpack_hits(value, n) if isinstance(value, str) else np.asarray(value, dtype=bool).ravel()
    if hits.size != n:
        raise ValueError(f"run {run['model']} {run['recipe']} {run['setting']} seed {run.get('seed')}: "
                         f"{hits.size} hits for {n} images")
    return hits


def _by_seed(runs: Sequence[Mapping], model: str, recipe: str, setting: str) -> dict:
    """{seed: run} of `recipe` on `model` at `setting`; the float model's run (any setting)
    under the key None."""
    if recipe == FLOAT:
        found = [r for r in runs if r["model"] == model and r["recipe"] == FLOAT]
        return {None: found[0]} if found else {}
    return {r.get("seed"): r for r in runs if r["model"] == model and r["recipe"] == recipe
            and r["setting"] == setting}


def _pair(a_runs: dict, b_runs: dict) -> tuple[list, np.ndarray, np.ndarray] | None:
    """(seeds, A (seeds, images), B (seeds, images)) on the seeds both ran; None when none."""
    if None in a_runs and None in b_runs:
        seeds: list = [None]
    elif None in a_runs or None in b_runs:  # the float model against a calibrated recipe
        seeds = sorted(k for k in (b_runs if None in a_runs else a_runs) if k is not None)
    else:
        seeds = sorted(set(a_runs) & set(b_runs))
    if not seeds:
        return None
    a = [_hits(a_runs.get(s, a_runs.get(None))) for s in seeds]
    b = [_hits(b_runs.get(s, b_runs.get(None))) for s in seeds]
    sizes = sorted({h.size for h in a + b})
    if len(sizes) > 1:
        raise ValueError(f"the runs were evaluated on {' and '.join(map(str, sizes))} images: "
                         "a paired comparison needs the same images")
    return seeds, np.stack(a), np.stack(b)  # (seeds, images) each


def judge_claims(runs: Sequence[Mapping], claims: Sequence[Claim], resamples: int = DEFAULT_RESAMPLES,
                 level: float = DEFAULT_LEVEL, seed: int = 0) -> list[dict]:
    """Every claim on every model and quantized setting where both recipes ran: one dict
    per (model, setting, claim) with `claim`, `a`, `b`, `seeds` and the paired difference
    (`PairedDifference.to_dict()`: difference, low, high, verdict, per_seed, ...).
    Models and settings in the order the runs first name them."""
    models = list(dict.fromkeys(r["model"] for r in runs))
    settings = list(dict.fromkeys(r["setting"] for r in runs if r["recipe"] != FLOAT))
    entries, pairs = [], []
    for model in models:
        for setting in settings:
            for claim in claims:
                pair = _pair(_by_seed(runs, model, claim.a, setting), _by_seed(runs, model, claim.b, setting))
                if pair is None:
                    continue
                entries.append({"model": model, "setting": setting, "claim": claim.name, "a": claim.a,
                                "b": claim.b, "seeds": pair[0]})
                pairs.append(pair[1:])
    judged = paired_differences(pairs, resamples, level, seed) if pairs else []
    return [{**e, **p.to_dict()} for e, p in zip(entries, judged, strict=True)]


def find_claim(claims: Sequence[Mapping], model: str, setting: str, a: str, b: str) -> Mapping | None:
    """The judged claim A vs B on `model` at `setting`, or None."""
    for c in claims:
        if (c["model"], c["setting"], c["a"], c["b"]) == (model, setting, a, b):
            return c
    return None
