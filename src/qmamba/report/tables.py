"""Results tables as Markdown: a generic table and the demo's per-model tables."""
from __future__ import annotations

from collections.abc import Mapping, Sequence


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


def eval_note(num_images: int, limit: int | None, total: int | None, source: str) -> str:
    """'the first 2,000 of the 10,000 built-in test images' or 'all 10,000 ...'."""
    if limit is not None and total is not None and num_images < total:
        return f"the first {num_images:,} of the {total:,} {source}"
    return f"all {num_images:,} {source}"


def demo_markdown(results: Mapping) -> str:
    """The demo's results.md: one table per model (rows: recipe, columns: setting).

    `results` is the demo's results.json content: `models` {name: {fp: {top1, top5,
    num_images}, ...}}, `rows` [{model, recipe, setting, top1, ...}], `settings`,
    `recipes`, `eval` {num_images, limit, total, source}, `calibration` {images, seed}.
    """
    settings = list(results["settings"])
    recipes = [r for r in results["recipes"] if r != "fp"]
    ev = results["eval"]
    cal = results["calibration"]
    note = eval_note(ev["num_images"], ev.get("limit"), ev.get("total"), ev["source"])
    searching = [r for r in recipes if any(row["recipe"] == r and row.get("config", {}).get("search", {}).get("enabled")
                                           for row in results["rows"])]
    out = ["# qmamba demo: top-1 accuracy (%) of the built-in models", ""]
    out.append(
        f"Evaluated on {note}"
        + (" (a fixed subset, to keep the demo short; about ±"
           f"{_stderr_points(ev['num_images']):.1f} points of sampling error at 85%)" if ev.get("limit") else "")
        + f". Calibrated on {cal['images']:,} training images (seed {cal['seed']}), never on test images"
        + (f"; the recipes that search clipping ranges ({', '.join(searching)}) score candidates on "
           f"{cal['search_samples']} of them" if cal.get("search_samples") and searching else "")
        + ". "
        "Settings are WxAy: x-bit weights, y-bit activations (patch embedding and head at "
        "8 bits unless the config says otherwise)."
    )
    out.append("")
    for model, info in results["models"].items():
        fp = info["fp"]
        out.append(f"## {model}")
        out.append("")
        out.append(f"**{model}**: full precision (FP) top-1 {fmt_acc(fp['top1'])}, "
                   f"top-5 {fmt_acc(fp['top5'])} on {fp['num_images']:,} images.")
        out.append("")
        cells = {(r["recipe"], r["setting"]): r for r in results["rows"] if r["model"] == model}
        rows = []
        for recipe in recipes:
            row = [recipe]
            for s in settings:
                r = cells.get((recipe, s))
                row.append(fmt_acc(r["top1"]) if r is not None else "—")
            rows.append(row)
        if rows:
            out.append(markdown_table(["recipe", *settings], rows))
        else:
            out.append("(no quantized runs)\n")
    out.append(f"Command: `{results.get('command', 'qmamba demo')}`; "
               f"total time {results.get('seconds', 0.0):.0f} s.")
    return "\n".join(out) + "\n"


def _stderr_points(n: int, p: float = 0.85) -> float:
    return 100.0 * (p * (1 - p) / max(n, 1)) ** 0.5
