"""What ``reppo bench`` reports: results.csv, the summary (Markdown, also printed) and the curve plots.

Definitions (per task and method, over seeds):

- final return: each seed's last evaluation (no evaluation is past the budget); mean and 95% percentile bootstrap
  interval of the mean (:func:`reppo.plot.mean_and_interval`).
- time to 90%: the first evaluation at which the mean return over seeds reaches 90% of the best method's final
  mean on that task; its env steps and the mean over seeds of its compile-free wall-clock seconds ("not reached"
  when the method never gets there).
- aggregate: interquartile mean (the mean of the middle 50%, ``floor(n/4)`` cut from each end) of final
  return / 1000 over all (task, seed) pairs of a method.
- published reference: ``mean_final_return`` of ``../shared/reference/dmc_final_returns.csv`` (the mean over the
  released runs of the paper, GPU, 50M env steps). REPPO is compared with ``reppo_small_data`` (1024 envs x 32
  steps, the ``paper-small`` preset); Brax PPO with ``brax_ppo`` and Brax SAC with ``brax_sac_5M`` where the file
  has them.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reppo.bench.suites import METHOD_NAMES, METHODS
from reppo.plot import _resample, mean_and_interval

RESULTS_FILE = "results.csv"
SUMMARY_FILE = "summary.md"
RESULT_COLUMNS = ("task", "method", "seed", "env_steps", "wall_s", "eval_return")
THRESHOLD = 0.9
"""Time-to-return threshold, as a fraction of the best method's final mean return on the task."""
REFERENCE_FILE = Path("shared") / "reference" / "dmc_final_returns.csv"
REFERENCE_METHODS = {"reppo": "reppo_small_data", "ppo": "brax_ppo", "sac": "brax_sac_5M"}
"""Which published curve stands beside each method."""
PUBLISHED_TARGET_TASKS = ("CartpoleBalance", "ReacherEasy", "PendulumSwingup")
"""Tasks where REPPO should reach 90% of its published final return within the budget."""
MEMORY_RATIO = 5.0
"""REPPO at ``paper-small`` should use less than 1/MEMORY_RATIO of Brax SAC's peak memory."""


@dataclass(frozen=True)
class ResultRow:
    """One evaluation of one seed: a row of results.csv."""

    task: str
    method: str
    seed: int
    env_steps: int
    wall_s: float
    eval_return: float


@dataclass(frozen=True)
class RunFacts:
    """What the summary needs from runs.csv: a run's status, cost and note."""

    task: str
    method: str
    seeds: str
    status: str
    compile_s: float | None
    peak_rss_mb: float
    device_peak_mb: float | None
    note: str


@dataclass(frozen=True)
class Reference:
    """A published final return."""

    source: str
    """Method name in the reference file."""
    mean: float
    n_runs: int


@dataclass
class MethodStats:
    """Summary of one method on one task."""

    n: int = 0
    """Seeds with at least one evaluation."""
    mean: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    env_steps: int = 0
    """Env steps of the last evaluation (the largest over seeds)."""
    wall_s: float = math.nan
    """Mean over seeds of the compile-free wall-clock at the last evaluation."""
    to_threshold: tuple[int, float] | None = None
    """(env steps, seconds) of the first mean return >= THRESHOLD x best; None: not reached."""
    runs: list[RunFacts] = field(default_factory=list)


@dataclass
class Summary:
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    stats: dict[tuple[str, str], MethodStats]
    best: dict[str, float]
    """Best final mean return per task (the time-to-90% reference)."""
    iqm: dict[str, tuple[float, int]]
    """Per method: IQM of final return / 1000 over (task, seed), and how many scores."""
    reference: dict[tuple[str, str], Reference]
    targets: list[tuple[str, str]]
    """(target, outcome) lines."""


# --------------------------------------------------------------------------------------------------------------
# results.csv


def write_results(path: Path, rows: Iterable[ResultRow]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(RESULT_COLUMNS)
        for r in rows:
            writer.writerow([r.task, r.method, r.seed, r.env_steps, f"{r.wall_s:.3f}", f"{r.eval_return:.4f}"])


def read_results(path: Path) -> list[ResultRow]:
    with open(path, newline="") as fh:
        return [
            ResultRow(
                r["task"], r["method"], int(r["seed"]), int(r["env_steps"]), float(r["wall_s"]), float(r["eval_return"])
            )  # fmt: skip
            for r in csv.DictReader(fh)
        ]


# --------------------------------------------------------------------------------------------------------------
# statistics


def final_rows(rows: Iterable[ResultRow]) -> list[ResultRow]:
    """Each seed's last evaluation (largest env steps)."""
    last: dict[int, ResultRow] = {}
    for row in rows:
        if row.seed not in last or row.env_steps >= last[row.seed].env_steps:
            last[row.seed] = row
    return [last[s] for s in sorted(last)]


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval of the mean of ``values`` (seeds)."""
    mean, lo, hi = mean_and_interval(np.asarray(values, np.float64)[:, None], "ci95")
    return float(mean[0]), float(lo[0]), float(hi[0])


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the sorted values without the lowest and highest ``floor(n / 4)``."""
    x = np.sort(np.asarray(values, np.float64))
    cut = len(x) // 4
    return float(x[cut : len(x) - cut].mean())


def mean_curve(rows: Iterable[ResultRow]) -> list[tuple[int, float, float]]:
    """``(env_steps, mean return, mean wall_s)`` over the seeds evaluated at each env-step count, in step order."""
    by_steps: dict[int, list[ResultRow]] = {}
    for row in rows:
        by_steps.setdefault(row.env_steps, []).append(row)
    return [
        (steps, float(np.mean([r.eval_return for r in group])), float(np.mean([r.wall_s for r in group])))
        for steps, group in sorted(by_steps.items())
    ]


def time_to_threshold(rows: Iterable[ResultRow], threshold: float) -> tuple[int, float] | None:
    """Env steps and seconds of the first point of :func:`mean_curve` at or above ``threshold`` (None: never)."""
    return next(((steps, wall) for steps, ret, wall in mean_curve(rows) if ret >= threshold), None)


# --------------------------------------------------------------------------------------------------------------
# reference values


def reference_path() -> Path | None:
    """``../shared/reference/dmc_final_returns.csv`` beside the working directory or beside this checkout."""
    for root in (Path.cwd().parent, Path(__file__).resolve().parents[4]):
        if (root / REFERENCE_FILE).is_file():
            return root / REFERENCE_FILE
    return None


def load_reference(path: Path | None = None) -> dict[tuple[str, str], Reference]:
    """``{(task, bench method): Reference}`` from the published results file ({} when there is none)."""
    path = path or reference_path()
    if path is None:
        return {}
    wanted = {source: method for method, source in REFERENCE_METHODS.items()}
    with open(path, newline="") as fh:
        return {
            (r["task"], wanted[r["method"]]): Reference(r["method"], float(r["mean_final_return"]), int(r["n_runs"]))
            for r in csv.DictReader(fh)
            if r["method"] in wanted
        }


# --------------------------------------------------------------------------------------------------------------
# summary


def summarize(
    rows: Sequence[ResultRow],
    runs: Sequence[RunFacts],
    *,
    tasks: Sequence[str],
    methods: Sequence[str],
    reference: dict[tuple[str, str], Reference],
    reppo_preset: str,
) -> Summary:
    """Statistics, aggregate and target outcomes of a benchmark."""
    stats: dict[tuple[str, str], MethodStats] = {}
    for task in tasks:
        for method in methods:
            mine = [r for r in rows if r.task == task and r.method == method]
            s = stats[task, method] = MethodStats(runs=[f for f in runs if f.task == task and f.method == method])
            finals = final_rows(mine)
            if finals:
                s.n = len(finals)
                s.mean, s.lo, s.hi = mean_ci([r.eval_return for r in finals])
                s.env_steps = max(r.env_steps for r in finals)
                s.wall_s = float(np.mean([r.wall_s for r in finals]))
    best = {t: max((stats[t, m].mean for m in methods if stats[t, m].n), default=math.nan) for t in tasks}
    for task in tasks:
        for method in methods:
            if stats[task, method].n and math.isfinite(best[task]):
                mine = [r for r in rows if r.task == task and r.method == method]
                stats[task, method].to_threshold = time_to_threshold(mine, THRESHOLD * best[task])
    aggregate = {}
    for method in methods:
        finals = [final_rows(r for r in rows if r.task == t and r.method == method) for t in tasks]
        scores = [r.eval_return / 1000 for task_finals in finals for r in task_finals]
        if scores:
            aggregate[method] = (iqm(scores), len(scores))
    summary = Summary(tuple(tasks), tuple(methods), stats, best, aggregate, reference, [])
    summary.targets = _targets(summary, reppo_preset)
    return summary


def _targets(s: Summary, reppo_preset: str) -> list[tuple[str, str]]:
    lines = []
    if "reppo" not in s.methods:
        return lines
    for task in s.tasks:
        mine = s.stats[task, "reppo"]
        for peer in ("ppo", "sac"):
            if peer not in s.methods:
                continue
            other = s.stats[task, peer]
            name = f"{task}: REPPO final return >= {METHOD_NAMES[peer]}'s"
            if not (mine.n and other.n):
                lines.append((name, "not measured (a run failed)"))
            else:
                met = mine.mean >= other.mean
                lines.append((name, f"{'met' if met else 'MISSED'} ({mine.mean:.1f} vs {other.mean:.1f})"))
    for task in PUBLISHED_TARGET_TASKS:
        if task not in s.tasks:
            continue
        ref, mine = s.reference.get((task, "reppo")), s.stats[task, "reppo"]
        name = f"{task}: REPPO reaches {THRESHOLD:.0%} of the published REPPO final return"
        if ref is None or not mine.n:
            lines.append((name, "not measured (no reference value or no REPPO result)"))
        else:
            goal = THRESHOLD * ref.mean
            lines.append((name, f"{'met' if mine.mean >= goal else 'MISSED'} ({mine.mean:.1f} vs {goal:.1f})"))
    name = f"REPPO peak memory at paper-small < 1/{MEMORY_RATIO:.0f} of Brax SAC's"
    if reppo_preset != "paper-small" or "sac" not in s.methods:
        lines.append((name, f"not measured by this suite (REPPO ran the {reppo_preset} preset): "
                            "see benchmarks/memory.py"))  # fmt: skip
        return lines
    for task in s.tasks:
        mine, sac = s.stats[task, "reppo"].runs, s.stats[task, "sac"].runs
        if not mine or not sac:
            continue
        key = (lambda f: f.device_peak_mb) if all(f.device_peak_mb for f in mine + sac) else (lambda f: f.peak_rss_mb)
        a, b = max(key(f) for f in mine), max(key(f) for f in sac)
        lines.append((f"{task}: {name}", f"{'met' if a < b / MEMORY_RATIO else 'MISSED'} ({a:.0f} vs {b:.0f} MiB)"))
    return lines


def _ret(s: MethodStats) -> str:
    if not s.n:
        return "failed"
    return f"{s.mean:.1f} [{s.lo:.1f}, {s.hi:.1f}] (n={s.n})"


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def summary_markdown(s: Summary, command: str = "") -> str:
    """The summary as Markdown: final returns, time to 90%, cost per run, aggregate, targets, notes."""
    names = [METHOD_NAMES[m] for m in s.methods]
    out = ["# Benchmark summary", ""]
    if command:
        out += [f"Command: `{command}`", ""]
    show_ref = "reppo" in s.methods
    out += ["## Final deterministic eval return", "",
            "Mean over seeds [95% bootstrap CI of the mean] (n seeds), at the env steps given below."
            + (" Published: REPPO's published final return (mean over the paper's runs, 50M steps, GPU)." if show_ref
               else ""), ""]  # fmt: skip
    head = ["task", *names] + (["published REPPO"] if show_ref else [])
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task in s.tasks:
        cells = [task] + [_ret(s.stats[task, m]) for m in s.methods]
        if show_ref:
            ref = s.reference.get((task, "reppo"))
            cells.append(f"{ref.mean:.1f} ({ref.source}, {ref.n_runs} runs)" if ref else "n/a")
        out.append("| " + " | ".join(cells) + " |")
    out += ["", f"## Env steps and seconds to {THRESHOLD:.0%} of the best method's final mean return", ""]
    head = ["task", f"{THRESHOLD:.0%} of best", *names]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task in s.tasks:
        cells = [task, _num(THRESHOLD * s.best[task], 1)]
        for m in s.methods:
            st = s.stats[task, m]
            t = st.to_threshold
            cells.append("failed" if not st.n else "not reached" if t is None else f"{t[0]:,} steps / {t[1]:,.0f} s")
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "## Cost per task and method", "",
            "Env steps and training seconds (compile excluded) at the last evaluation, mean over seeds; compile "
            "seconds summed over the method's processes; peak host RSS (and device peak on a GPU) of its largest "
            "process (REPPO: all seeds in one process; Brax: one seed per process).", ""]  # fmt: skip
    head = ["task", "method", "env steps", "train s", "compile s", "peak RSS GiB", "device peak GiB", "runs"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task in s.tasks:
        for m in s.methods:
            st = s.stats[task, m]
            compile_s = sum(f.compile_s for f in st.runs if f.compile_s is not None) if st.runs else None
            rss = max((f.peak_rss_mb for f in st.runs), default=None)
            dev = [f.device_peak_mb for f in st.runs if f.device_peak_mb is not None]
            failed = sum(f.status != "ok" for f in st.runs)
            out.append("| " + " | ".join([
                task, METHOD_NAMES[m], f"{st.env_steps:,}" if st.n else "-", _num(st.wall_s), _num(compile_s),
                _num(None if rss is None else rss / 1024, 2), _num(max(dev) / 1024 if dev else None, 2),
                f"{len(st.runs) - failed} ok" + (f", {failed} failed" if failed else ""),
            ]) + " |")  # fmt: skip
    out += ["", "## Aggregate: interquartile mean of final return / 1000 over tasks and seeds", ""]
    out += ["| method | IQM | scores |", "|---|---|---|"]
    for m in s.methods:
        value, n = s.iqm.get(m, (math.nan, 0))
        out.append(f"| {METHOD_NAMES[m]} | {_num(value, 3)} | {n} |")
    if s.targets:
        out += ["", "## Targets", ""] + [f"- {name}: **{outcome}**" for name, outcome in s.targets]
    notes = sorted({(f.task, METHOD_NAMES[f.method], f.seeds, f.note) for st in s.stats.values() for f in st.runs
                    if f.note})  # fmt: skip
    if notes:
        out += ["", "## Notes", ""] + [f"- {task} {name} seed {seeds}: {note}" for task, name, seeds, note in notes]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------------------
# plots


def plot_suite(rows: Sequence[ResultRow], out_dir: Path, *, tasks: Sequence[str], methods: Sequence[str]) -> list[Path]:
    """``curves_env_steps.png`` and ``curves_wall_s.png``: one panel per task, per method the mean over seeds
    with its 95% bootstrap band (seeds resampled onto a common grid where their points differ)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths = []
    cols = min(len(tasks), 5)
    grid_rows = math.ceil(len(tasks) / cols)
    for attr, label, grid in (("env_steps", "environment steps", "union"),
                              ("wall_s", "wall-clock seconds (compile excluded)", "linspace")):  # fmt: skip
        fig = Figure(figsize=(max(4.0 * cols, 6.0), 3.2 * grid_rows), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        axes = np.atleast_1d(fig.subplots(grid_rows, cols, squeeze=False)).ravel()
        for ax, task in zip(axes, tasks, strict=False):
            for method in methods:
                seeds: dict[int, list[ResultRow]] = {}
                for r in rows:
                    if r.task == task and r.method == method:
                        seeds.setdefault(r.seed, []).append(r)
                if not seeds:
                    continue
                xs = [np.array([getattr(r, attr) for r in v], np.float64) for v in seeds.values()]
                ys = [np.array([r.eval_return for r in v], np.float64) for v in seeds.values()]
                if len(xs) == 1:
                    order = np.argsort(xs[0], kind="stable")
                    x, values = xs[0][order], ys[0][order][None]
                else:
                    x, values = _resample(xs, ys, grid)
                mean, lo, hi = mean_and_interval(values, "ci95")
                color = f"C{METHODS.index(method)}"
                ax.plot(x, mean, color=color, label=f"{METHOD_NAMES[method]} (n={len(xs)})", marker="o", markersize=3)
                ax.fill_between(x, lo, hi, color=color, alpha=0.25, linewidth=0)
            ax.set(title=task, xlabel=label, ylabel="eval return")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(loc="best", fontsize="small")
            else:
                ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
        for ax in axes[len(tasks) :]:
            ax.set_visible(False)
        fig.suptitle("mean over seeds; band: 95% bootstrap CI of the mean", fontsize="medium")
        path = out_dir / f"curves_{attr}.png"
        fig.savefig(path, format="png")
        paths.append(path)
    return paths
