"""Rows of several calibration seeds, summarised: mean and standard deviation per cell."""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping


def summarize_rows(rows: Iterable[Mapping]) -> list[dict]:
    """One entry per (model, recipe, setting), in first-seen order: the seeds, the top-1
    per seed, its mean and (sample) standard deviation (None for one seed), and top-5's
    mean, and the mean calibration seconds (None unless every run has `calib_seconds`).
    Rows without a `seed` (the float model) count as one seed."""
    cells: dict[tuple, list[Mapping]] = {}
    for row in rows:
        cells.setdefault((row["model"], row["recipe"], row["setting"]), []).append(row)
    out = []
    for (model, recipe, setting), group in cells.items():
        top1 = [float(r["top1"]) for r in group]
        top5 = [float(r["top5"]) for r in group if r.get("top5") is not None]
        out.append({
            "model": model, "recipe": recipe, "setting": setting,
            "seeds": [r.get("seed") for r in group],
            "top1": top1,
            "top1_mean": statistics.fmean(top1),
            "top1_std": statistics.stdev(top1) if len(top1) > 1 else None,
            "top5_mean": statistics.fmean(top5) if len(top5) == len(group) else None,
            "calib_seconds_mean": (statistics.fmean(float(r["calib_seconds"]) for r in group)
                                   if all(r.get("calib_seconds") is not None for r in group) else None),
        })
    return out


def mean_std_text(entry: Mapping, digits: int = 1) -> str:
    """'81.2 ± 1.3' (or '81.20' for one seed)."""
    if entry.get("top1_std") is None or not math.isfinite(entry["top1_std"]):
        return f"{entry['top1_mean']:.2f}"
    return f"{entry['top1_mean']:.{digits}f} ± {entry['top1_std']:.{digits}f}"
