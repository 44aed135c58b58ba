"""Results tables as Markdown: a generic table and the demo's per-model tables."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from qmamba.report.seeds import mean_std_text, summarize_rows


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence], align: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table; `align` per column: 'l', 'r' or 'c'."""
    headers = [_cell(h) for h in headers]
    body = [[_cell(v) for v in row] for row in rows]
    for row in body:
        if len(row) != len(headers):
            raise ValueError(f"row {row} has {len(row)} cells, the header {len(headers)}")
    align = list(align) if align is not None else ["l"] + ["r"] * (len(headers) - 1)
    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(headers) + " |",
             "| " + " | ".join(rule[a] for a in align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def fmt_acc(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def setting_name(w_bits: int | None, a_bits: int | None) -> str:
    return "FP" if w_bits is None else f"W{w_bits}A{a_bits}"


def eval_note(ev: Mapping) -> str:
    """'the first 1,000 of the 5,000 reporting images (the last 5,000 built-in test
    images)' or 'all 10,000 built-in test images'."""
    num, source, part = ev["num_images"], ev["source"], ev.get("part") or {}
    if part.get("name") in ("tuning", "reporting"):
        held = f"{part['name']} images ({part.get('rule', '')})" if part.get("rule") else f"{part['name']} images"
        if num < part.get("images", num):
            return f"the first {num:,} of the {part['images']:,} {held}"
        return f"all {num:,} {held}"
    if ev.get("limit") is not None and ev.get("total") is not None and num < ev["total"]:
        return f"the first {num:,} of the {ev['total']:,} {source}"
    return f"all {num:,} {source}"


def demo_markdown(results: Mapping) -> str:
    """The demo's results.md: one table per model (rows: recipe, columns: setting), the
    mean ± standard deviation over the calibration seeds when several ran.

    `results` is the demo's results.json content: `models` {name: {fp: {top1, top5,
    num_images}, ...}}, `rows` [{model, recipe, setting, seed, top1, ...}], `summary`
    (qmamba.report.seeds.summarize_rows), `settings`, `recipes`, `eval`, `calibration`.
    """
    settings = list(results["settings"])
    recipes = [r for r in results["recipes"] if r != "fp"]
    out = ["# qmamba demo: top-1 accuracy (%) of the built-in models", "", _data_note(results, recipes), ""]
    summary = results.get("summary") or summarize_rows(results["rows"])
    float_state = _float_scan_state(results["rows"])
    for model, info in results["models"].items():
        fp = info["fp"]
        out += [f"## {model}", "",
                f"**{model}**: full precision (FP) top-1 {fmt_acc(fp['top1'])}, "
                f"top-5 {fmt_acc(fp['top5'])} on {fp['num_images']:,} images.", ""]
        cells = {(e["recipe"], e["setting"]): e for e in summary if e["model"] == model}
        rows = [[recipe + (" †" if recipe in float_state else ""),
                 *(mean_std_text(cells[(recipe, s)]) if (recipe, s) in cells else "—" for s in settings)]
                for recipe in recipes if any((recipe, s) in cells for s in settings)]
        out.append(markdown_table(["recipe", *settings], rows) if rows else "(no quantized runs)\n")
    if float_state:
        out.append("† keeps the scan's A_bar, B_bar u and h in floating point, as its paper's kernel "
                   "does (`role_bits`); its `+base` row quantizes them like every other row.\n")
    out.append(f"Command: `{results.get('command', 'qmamba demo')}`; "
               f"total time {results.get('seconds', 0.0):.0f} s.")
    return "\n".join(out) + "\n"


def _data_note(results: Mapping, recipes: Sequence[str]) -> str:
    ev, cal = results["eval"], results["calibration"]
    seeds = cal.get("seeds") or [cal.get("seed", 0)]
    searching = [r for r in recipes if any(row["recipe"] == r and row.get("config", {}).get("search", {}).get("enabled")
                                           for row in results["rows"])]
    seeds_text = (f"calibration seeds {', '.join(map(str, seeds))} (mean ± standard deviation over them)"
                  if len(seeds) > 1 else f"calibration seed {seeds[0]}")
    return (
        f"Evaluated on {eval_note(ev)}"
        + (f" (about ±{_stderr_points(ev['num_images']):.1f} points of sampling error at 85%)"
           if ev["num_images"] < 5000 else "")
        + f". Calibrated on {cal['images']:,} training images, {seeds_text}; never on test images"
        + (f"; the recipes that search clipping ranges ({', '.join(searching)}) score candidates on "
           f"{cal['search_samples']} of them" if cal.get("search_samples") and searching else "")
        + ". Settings are WxAy: x-bit weights, y-bit activations (patch embedding and head at "
        "8 bits unless the config says otherwise). Orderings are claimed only from the accuracy "
        "benchmark's intervals (`python -m qmamba.bench accuracy`), not from this table."
    )


def scan_state_in_float(role_bits: Mapping) -> bool:
    """Whether a config's `role_bits` leave the scan's in-loop points (A_bar, B_bar u, h)
    in float (None): the rows marked † in the tables."""
    return any(role_bits.get(r, 0) is None for r in ("ssm.A", "ssm.B", "ssm.h"))


def _float_scan_state(rows: Sequence[Mapping]) -> set[str]:
    """Recipes whose config leaves the scan's in-loop points in float (role_bits None)."""
    return {row["recipe"] for row in rows if scan_state_in_float((row.get("config") or {}).get("role_bits") or {})}


def _stderr_points(n: int, p: float = 0.85) -> float:
    return 100.0 * (p * (1 - p) / max(n, 1)) ** 0.5
