"""Short plain-text summaries printed at the end of CLI commands."""
from __future__ import annotations

import math
from collections.abc import Mapping


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "?"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def sqnr_value(v) -> float | None:
    """A report's sqnr_db value as a float (JSON writes infinities as "inf"); None if absent."""
    if v is None:
        return None
    if v == "inf":
        return math.inf
    if v == "-inf":
        return -math.inf
    return float(v)


def worst_points(points: Mapping[str, Mapping], k: int = 3) -> list[tuple[str, float, str]]:
    """The k points with the lowest SQNR: (name, dB, role)."""
    scored = []
    for name, info in points.items():
        v = sqnr_value(info.get("sqnr_db"))
        if v is not None and not math.isinf(v):
            scored.append((name, v, str(info.get("role", ""))))
    return sorted(scored, key=lambda t: t[1])[:k]


def quantize_summary(report: Mapping) -> str:
    """The end-of-run summary of `qmamba quantize` (from its report.json content)."""
    fp, q = report["fp"], report["quantized"]
    cal, ev = report["calibration"], report["evaluation"]
    lines = [f"{report['model']} ({report['weights']}), {report['method']} {report['setting']}"]
    if cal.get("images"):
        lines.append(f"  calibration : {cal['images']:,} images from {cal['source']}, seed {cal['seed']}, "
                     f"{cal['seconds']:.1f} s")
    subset = ""
    if ev.get("limit"):
        subset = f" (subset of {ev['total']:,})"
    lines.append(f"  evaluation  : {ev['images']:,} images from {ev['source']}{subset}")
    if ev.get("labels"):
        lines.append(f"  labels      : {ev['labels']['summary']}")
    lines.append(f"  FP          : top-1 {fp['top1']:6.2f}  top-5 {fp['top5']:6.2f}")
    lines.append(f"  quantized   : top-1 {q['top1']:6.2f}  top-5 {q['top5']:6.2f}  "
                 f"({q['top1'] - fp['top1']:+.2f} top-1)")
    points = report.get("points", {})
    if points:
        lines.append(f"  points      : {len(points)} quantized")
        worst = worst_points(points)
        if worst:
            lines.append("  lowest SQNR : " + ", ".join(f"{n} {v:.1f} dB" for n, v, _ in worst))
    size = report.get("size")
    if size:
        lines.append(f"  saved       : {size['path']} ({human_bytes(size.get('file_bytes'))}; weight codes "
                     f"{human_bytes(size.get('weight_code_bytes'))} vs {human_bytes(size.get('weight_float32_bytes'))} float32)")
    if "wall_seconds" in report:
        lines.append(f"  wall time   : {report['wall_seconds']:.1f} s")
    return "\n".join(lines)


def eval_summary(report: Mapping) -> str:
    r, ev = report["result"], report["evaluation"]
    origin = report.get("quantized") or report.get("weights") or ""
    if report.get("backend") == "int":
        origin += ", integer backend"
    subset = f" (subset of {ev['total']:,})" if ev.get("limit") else ""
    line = (f"{report['model']} {report['setting']} ({origin}): top-1 {r['top1']:.2f}  top-5 {r['top5']:.2f}  "
            f"on {r['num_images']:,} images from {ev['source']}{subset}  "
            f"[{r['seconds']:.1f} s, {r['ms_per_image']:.2f} ms/image]")
    return line + (f"\n  {ev['labels']['summary']}" if ev.get("labels") else "")
