"""The accuracy benchmark's Markdown (`python -m qmamba.bench accuracy`): per model, the
mean ± sd table (recipes x settings) and the claims with their intervals and verdicts."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from qmamba.report.seeds import mean_std_text
from qmamba.report.tables import eval_note, fmt_acc, markdown_table, scan_state_in_float

__all__ = ["accuracy_markdown", "claims_grid", "claims_table"]


def _signed(x: float, digits: int = 2) -> str:
    return f"{x:+.{digits}f}"


def claims_table(claims: Sequence[Mapping]) -> str:
    """One line per judged claim: A - B, the interval, the verdict, the per-seed differences."""
    level = f"{100 * claims[0]['level']:.0f}%" if claims else "95%"
    rows = [[c["claim"], c["setting"], _signed(c["difference"]),
             f"[{_signed(c['low'])}, {_signed(c['high'])}]", f"**{c['verdict']}**",
             " / ".join(_signed(d, 1) for d in c["per_seed"])] for c in claims]
    return markdown_table(["claim (A vs B)", "setting", "A − B", f"{level} interval", "verdict", "per seed"],
                          rows, ["l", "l", "r", "r", "c", "r"])


def float_state_recipes(recipes: Sequence[str]) -> set[str]:
    """The recipes (or variants) whose config keeps the scan's A_bar, B_bar u or h in
    float (`role_bits` None), marked † in the tables."""
    from qmamba.bench.accuracy_runs import split_variant
    from qmamba.quant.config import QuantConfig

    def role_bits(name: str) -> Mapping:
        recipe, overrides = split_variant(name)
        return QuantConfig.from_recipe(recipe, 4, 4).replace(**overrides).role_bits

    return {name for name in recipes if scan_state_in_float(role_bits(name))}


def claims_grid(claims: Sequence[Mapping]) -> str:
    """The claims of one model as a grid: a row per claim, a column per setting, each
    cell 'A − B [low, high] verdict' (the per-seed differences are in claims_table and
    accuracy.json)."""
    names = list(dict.fromkeys(c["claim"] for c in claims))
    settings = list(dict.fromkeys(c["setting"] for c in claims))
    cell = {(c["claim"], c["setting"]): (f"{_signed(c['difference'])} [{_signed(c['low'])}, "
                                          f"{_signed(c['high'])}] **{c['verdict']}**") for c in claims}
    rows = [[n, *(cell.get((n, s), "—") for s in settings)] for n in names]
    return markdown_table(["claim (A vs B)", *settings], rows, ["l", *("r" for _ in settings)])


def _model_section(report: Mapping, model: str) -> list[str]:
    runs = [r for r in report["runs"] if r["model"] == model]
    fp = next((r for r in runs if r["recipe"] == "fp"), None)
    settings = list(dict.fromkeys(r["setting"] for r in runs if r["recipe"] != "fp"))
    cells = {(e["recipe"], e["setting"]): e for e in report["rows"] if e["model"] == model}
    recipes = list(dict.fromkeys(r["recipe"] for r in runs if r["recipe"] != "fp"))
    out = [f"## {model}", ""]
    if fp is not None:
        out += [f"Full precision (FP): top-1 {fmt_acc(fp['top1'])}, top-5 {fmt_acc(fp['top5'])}.", ""]
    floats = float_state_recipes(recipes)
    table = [[r + (" †" if r in floats else ""),
              *(mean_std_text(cells[(r, s)], 2) if (r, s) in cells else "—" for s in settings)] for r in recipes]
    out += [markdown_table(["recipe", *settings], table)]
    if floats:
        out += ["† keeps the scan's A_bar, B_bar u and h in floating point, as its paper's kernel does; "
                "its `+base` row quantizes them like every other row.", ""]
    timed = [r for r in recipes if all(cells.get((r, s), {}).get("calib_seconds_mean") is not None for s in settings)]
    if timed:
        out += ["Calibration seconds, mean over the seeds as each run timed itself (wall clock; noisy when "
                "runs share the machine: `python -m qmamba.bench calibration` times recipes in turns):",
                "", markdown_table(["recipe", *settings],
                                   [[r, *(f"{cells[(r, s)]['calib_seconds_mean']:.1f}" for s in settings)]
                                    for r in timed]), ""]
    claims = [c for c in report["claims"] if c["model"] == model]
    if claims:
        by_claim = sorted(claims, key=lambda c: [x["claim"] for x in claims].index(c["claim"]))
        level = f"{100 * by_claim[0]['level']:.0f}%"
        out += [f"Claims: A − B in top-1 points over the same seeds and images, its {level} interval "
                "and verdict.", "", claims_grid(by_claim), "",
                "Per seed:", "", claims_table(by_claim)]
    return out


def platform_note(platform: Mapping | None) -> str:
    """One sentence: the CPU, PyTorch's CPU capability, whether the kernel paths were
    pinned (qmamba.portable) and the threads; "" without a platform record."""
    if not platform:
        return ""
    cpu = platform.get("cpu") or {}
    flags = cpu.get("flags") or {}
    isa = "AVX-512" if flags.get("avx512f") else "AVX2" if flags.get("avx2") else "no AVX2"
    if flags.get("avx512_vnni"):
        isa += " + VNNI"
    paths = ("pinned to the portable AVX2 paths (qmamba.portable)" if platform.get("pinned")
             else "this CPU's own (not pinned)")
    return (f"Machine: {cpu.get('model') or 'unknown CPU'} ({isa}); PyTorch CPU capability "
            f"{platform.get('torch_cpu_capability')}; kernel paths {paths}; {platform.get('threads')} thread(s).")


def _tuning_note(part) -> str:
    """Whether defaults may have been chosen on these images (the tuning part is where
    they are chosen; the reporting part never is)."""
    name = part.get("name") if isinstance(part, Mapping) else part
    if name == "reporting":
        return "; no default was chosen on them"
    if name == "tuning":
        return "; the tuning part: defaults are chosen on these images, so they are not reported as results"
    return "; this includes the tuning images, on which defaults were chosen"


def accuracy_markdown(report: Mapping) -> str:
    """accuracy.md from accuracy.json's content (`qmamba.bench.accuracy`)."""
    cfg, boot = report["config"], report["bootstrap"]
    runs = report["runs"]
    images = runs[0]["num_images"] if runs else 0
    part = report.get("eval_part") or {}
    ev = {"num_images": images, "source": "built-in Fashion-MNIST test images", "part": part,
          "limit": cfg.get("eval_limit"), "total": None}
    seeds = ", ".join(map(str, cfg["seeds"]))
    out = ["# qmamba accuracy benchmark: top-1 (%) over calibration seeds", "",
           f"Evaluated on {eval_note(ev)}{_tuning_note(part)}. Each run calibrates on "
           f"{cfg['calib_size']} training images drawn with its seed (seeds {seeds}); cells are the mean ± "
           "sample standard deviation over the seeds. A claim 'A vs B' is the paired difference A − B "
           f"with a {100 * boot['level']:.0f}% bootstrap interval ({boot['scheme']}; {boot['resamples']:,} "
           "resamples): **wins** when the interval lies above 0, **loses** when below, **ties** otherwise. "
           "Orderings are read from the verdicts, never from two cells of a table.", ""]
    if report.get("platform"):
        out += [platform_note(report["platform"]), ""]
    for model in dict.fromkeys(r["model"] for r in runs):
        out += _model_section(report, model)
    out.append(f"Command: `{report.get('command', '')}`; {len(runs)} runs, "
               f"{report.get('compute_seconds', 0.0) / 60:.0f} min of computing in all "
               f"({report.get('seconds', 0.0) / 60:.0f} min in this invocation).")
    return "\n".join(out) + "\n"
