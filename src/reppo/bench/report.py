"""What ``reppo bench`` reports: results.csv, the summary (Markdown, also printed) and the plots.

Definitions (per task and method, over seeds):

- final return: each seed's last evaluation (no evaluation is past the budget); mean and 95% percentile bootstrap
  interval of the mean (:func:`reppo.plot.mean_and_interval`, through rliable).
- time to 90%: the first evaluation at which the mean return over seeds reaches 90% of the best method's final
  mean on that task; its env steps and the mean over seeds of its compile-free wall-clock seconds ("not reached"
  when the method never gets there).
- aggregates over tasks and seeds (rliable, Agarwal et al. 2021, "Deep RL at the Edge of the Statistical
  Precipice"): the normalised final scores of a method form a (seeds x tasks) matrix (:data:`RETURN_SCALES`;
  the seeds with a final return on every task). IQM, median, mean and optimality gap (``rliable.metrics``), the
  probability that REPPO beats each peer on a task (averaged over tasks), and the performance profile (fraction
  of runs above each score), each with rliable's stratified-bootstrap 95% interval (seeds resampled within each
  task; :data:`~reppo.plot.BOOTSTRAP_REPS` resamples; numpy's global generator seeded with
  :data:`~reppo.plot.BOOTSTRAP_SEED` for each method or pair, so every interval is reproducible).
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
from reppo.plot import BOOTSTRAP_REPS, BOOTSTRAP_SEED, _resample, mean_and_interval, seeded_bootstrap

RESULTS_FILE = "results.csv"
SUMMARY_FILE = "summary.md"
CURVE_FILES = ("curves_env_steps.png", "curves_wall_s.png")
PROFILE_FILE = "performance_profile.png"
AGGREGATES_FILE = "aggregates.png"
RETURN_SCALES = {"DM Control": 1000.0}
"""Normalised score = final return / scale, per MuJoCo Playground family. DM Control: a reward in [0, 1] per step
over 1000-step episodes, so a return in [0, 1000]. Locomotion and manipulation have none: their returns sum
weighted reward terms with no fixed range (and the bench's peers have published settings for DM Control only)."""
AGGREGATES = ("IQM", "median", "mean", "optimality gap")
"""rliable's aggregate metrics, in the order of the summary (``rliable.metrics.aggregate_*``)."""
PROFILE_TAUS = np.linspace(0.0, 1.0, 101)
"""Normalised scores at which the performance profile is evaluated."""
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


Estimate = tuple[float, float, float]
"""A point estimate and its 95% interval: (value, lo, hi)."""


@dataclass
class Summary:
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    stats: dict[tuple[str, str], MethodStats]
    best: dict[str, float]
    """Best final mean return per task (the time-to-90% reference)."""
    scores: dict[str, np.ndarray]
    """Per method: normalised final scores, (seeds x tasks), the seeds with a final return on every task."""
    aggregates: dict[str, dict[str, Estimate]]
    """Per method: each of :data:`AGGREGATES` of its ``scores``."""
    improvement: dict[str, Estimate]
    """Per peer: probability of improvement of REPPO over it."""
    reference: dict[tuple[str, str], Reference]
    targets: list[tuple[str, str]] = field(default_factory=list)
    """(target, outcome) lines."""
    reps: int = BOOTSTRAP_REPS
    seed: int = BOOTSTRAP_SEED
    equal_time: dict[str, tuple[float, dict[str, float]]] = field(default_factory=dict)
    """Per task: (seconds, method -> mean return at that many training seconds) (:func:`equal_time`)."""


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


def mean_ci(values: Sequence[float], *, reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED) -> Estimate:
    """Mean and 95% percentile-bootstrap interval of the mean of ``values`` (seeds)."""
    mean, lo, hi = mean_and_interval(np.asarray(values, np.float64)[:, None], "ci95", reps=reps, seed=seed)
    return float(mean[0]), float(lo[0]), float(hi[0])


def return_scale(task: str) -> float:
    """The return that normalises ``task``'s scores to 1 (:data:`RETURN_SCALES`); ValueError for other families."""
    from mujoco_playground import dm_control_suite, locomotion, manipulation

    families = {"DM Control": dm_control_suite, "locomotion": locomotion, "manipulation": manipulation}
    family = next((name for name, module in families.items() if task in module.ALL_ENVS), "no Playground family")
    if family not in RETURN_SCALES:
        raise ValueError(f"task {task!r} ({family}) has no normalised score; allowed: {', '.join(RETURN_SCALES)} "
                         "tasks")  # fmt: skip
    return RETURN_SCALES[family]


def score_matrix(rows: Iterable[ResultRow], tasks: Sequence[str], method: str) -> np.ndarray:
    """``method``'s normalised final scores as rliable takes them, (seeds x tasks): the seeds that have a final
    return on every task, in seed order (shape (0, len(tasks)) when there is none)."""
    finals = {t: {r.seed: r.eval_return for r in final_rows(r for r in rows if r.task == t and r.method == method)}
              for t in tasks}  # fmt: skip
    seeds = sorted(set.intersection(*(set(f) for f in finals.values()))) if tasks else []
    return np.array([[finals[t][s] / return_scale(t) for t in tasks] for s in seeds]).reshape(len(seeds), len(tasks))


def aggregate_estimates(
    scores: np.ndarray, *, reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED
) -> dict[str, Estimate]:
    """:data:`AGGREGATES` of a (seeds x tasks) score matrix with rliable's stratified-bootstrap 95% intervals."""
    from rliable import library, metrics

    funcs = (metrics.aggregate_iqm, metrics.aggregate_median, metrics.aggregate_mean, metrics.aggregate_optimality_gap)
    with seeded_bootstrap(seed):
        point, ci = library.get_interval_estimates({"": scores}, lambda x: np.array([f(x) for f in funcs]), reps=reps)
    return {name: (float(point[""][i]), float(ci[""][0, i]), float(ci[""][1, i])) for i, name in enumerate(AGGREGATES)}


def improvement_estimate(
    x: np.ndarray, y: np.ndarray, *, reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED
) -> Estimate:
    """rliable's probability of improvement of X over Y (score matrices over the same tasks) with its 95%
    interval (the runs of X and of Y resampled independently within each task)."""
    from rliable import library, metrics

    with seeded_bootstrap(seed):
        point, ci = library.get_interval_estimates({"": [x, y]}, metrics.probability_of_improvement, reps=reps)
    return float(point[""]), float(ci[""][0, 0]), float(ci[""][1, 0])


def performance_profiles(
    scores: dict[str, np.ndarray], *, reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's score distributions at :data:`PROFILE_TAUS` (fraction of runs above each score) and their 95%
    bands, per key of ``scores``."""
    from rliable import library

    profiles, bands = {}, {}
    for name, matrix in scores.items():
        with seeded_bootstrap(seed):
            profile, band = library.create_performance_profile({name: matrix}, PROFILE_TAUS, reps=reps)
        profiles[name], bands[name] = profile[name], band[name]
    return profiles, bands


def mean_curve(rows: Iterable[ResultRow]) -> list[tuple[int, float, float]]:
    """``(env_steps, mean return, mean wall_s)`` over the seeds evaluated at each env-step count, in step order."""
    by_steps: dict[int, list[ResultRow]] = {}
    for row in rows:
        by_steps.setdefault(row.env_steps, []).append(row)
    return [
        (steps, float(np.mean([r.eval_return for r in group])), float(np.mean([r.wall_s for r in group])))
        for steps, group in sorted(by_steps.items())
    ]


def return_at_seconds(rows: Iterable[ResultRow], seconds: float) -> float:
    """Mean over seeds of each seed's return at its last evaluation within ``seconds`` of training (NaN: none)."""
    last: dict[int, ResultRow] = {}
    for row in rows:
        if row.wall_s <= seconds and (row.seed not in last or row.env_steps >= last[row.seed].env_steps):
            last[row.seed] = row
    return float(np.mean([r.eval_return for r in last.values()])) if last else math.nan


def equal_time(rows: Sequence[ResultRow], stats: dict[str, MethodStats]) -> tuple[float, dict[str, float]]:
    """The methods of one task compared at equal training seconds: (T, method -> :func:`return_at_seconds` at T),
    T the shortest mean final training time among the methods that trained (final ``wall_s`` > 0; published Brax
    PPO stops at its initial evaluation in a cpu budget). A method that stopped before T is taken at its end."""
    trained = [st.wall_s for st in stats.values() if st.n and st.wall_s > 0]
    seconds = min(trained, default=0.0)
    return seconds, {m: return_at_seconds([r for r in rows if r.method == m], seconds) for m in stats if stats[m].n}


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
    reps: int = BOOTSTRAP_REPS,
    seed: int = BOOTSTRAP_SEED,
) -> Summary:
    """Statistics, aggregates and target outcomes of a benchmark (``reps`` and ``seed``: every bootstrap's)."""
    stats: dict[tuple[str, str], MethodStats] = {}
    for task in tasks:
        for method in methods:
            mine = [r for r in rows if r.task == task and r.method == method]
            s = stats[task, method] = MethodStats(runs=[f for f in runs if f.task == task and f.method == method])
            finals = final_rows(mine)
            if finals:
                s.n = len(finals)
                s.mean, s.lo, s.hi = mean_ci([r.eval_return for r in finals], reps=reps, seed=seed)
                s.env_steps = max(r.env_steps for r in finals)
                s.wall_s = float(np.mean([r.wall_s for r in finals]))
    best = {t: max((stats[t, m].mean for m in methods if stats[t, m].n), default=math.nan) for t in tasks}
    for task in tasks:
        for method in methods:
            if stats[task, method].n and math.isfinite(best[task]):
                mine = [r for r in rows if r.task == task and r.method == method]
                stats[task, method].to_threshold = time_to_threshold(mine, THRESHOLD * best[task])
    scores = {m: score_matrix(rows, tasks, m) for m in methods}
    scores = {m: x for m, x in scores.items() if len(x)}
    aggregates = {m: aggregate_estimates(x, reps=reps, seed=seed) for m, x in scores.items()}
    improvement = {}
    if "reppo" in scores:
        improvement = {m: improvement_estimate(scores["reppo"], x, reps=reps, seed=seed) for m, x in scores.items()
                       if m != "reppo"}  # fmt: skip
    summary = Summary(tuple(tasks), tuple(methods), stats, best, scores, aggregates, improvement, reference, reps=reps,
                      seed=seed)  # fmt: skip
    summary.targets = _targets(summary, reppo_preset)
    for task in tasks:
        mine = [r for r in rows if r.task == task]
        summary.equal_time[task] = equal_time(mine, {m: stats[task, m] for m in methods})
    return summary


def _targets(s: Summary, reppo_preset: str) -> list[tuple[str, str]]:
    lines = []
    if "reppo" not in s.methods:
        return lines
    for task in s.tasks:
        mine = s.stats[task, "reppo"]
        for peer in (m for m in s.methods if m != "reppo"):
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


def _estimate(e: Estimate) -> str:
    return f"{e[0]:.3f} [{e[1]:.3f}, {e[2]:.3f}]"


def _row(cells: Sequence[str]) -> str:
    """One row of a Markdown table."""
    return "| " + " | ".join(cells) + " |"


def _table(head: Sequence[str]) -> list[str]:
    """The header row and separator of a Markdown table."""
    return [_row(head), "|" + "---|" * len(head)]


def _header_section(command: str, recomputed_by: str) -> list[str]:
    out = ["# Benchmark summary", ""]
    if command:
        out += [f"Command: `{command}`", ""]
    if recomputed_by:
        out += [f"Summary recomputed from its results.csv and runs.csv: `{recomputed_by}`", ""]
    return out


def _final_return_section(s: Summary) -> list[str]:
    """Final return per task and method, and REPPO's published one where REPPO ran."""
    show_ref = "reppo" in s.methods
    out = ["## Final deterministic eval return", "",
           "Mean over seeds [95% bootstrap CI of the mean] (n seeds), at the env steps given below."
           + (" Published: REPPO's published final return (mean over the paper's runs, 50M steps, GPU)." if show_ref
              else ""), ""]  # fmt: skip
    out += _table(["task", *(METHOD_NAMES[m] for m in s.methods)] + (["published REPPO"] if show_ref else []))
    for task in s.tasks:
        cells = [task] + [_ret(s.stats[task, m]) for m in s.methods]
        if show_ref:
            ref = s.reference.get((task, "reppo"))
            cells.append(f"{ref.mean:.1f} ({ref.source}, {ref.n_runs} runs)" if ref else "n/a")
        out.append(_row(cells))
    return out


def _to_threshold(st: MethodStats) -> str:
    t = st.to_threshold
    return "failed" if not st.n else "not reached" if t is None else f"{t[0]:,} steps / {t[1]:,.0f} s"


def _threshold_section(s: Summary) -> list[str]:
    """Env steps and seconds at which each method first reaches THRESHOLD x the best final mean return."""
    out = ["", f"## Env steps and seconds to {THRESHOLD:.0%} of the best method's final mean return", ""]
    out += _table(["task", f"{THRESHOLD:.0%} of best", *(METHOD_NAMES[m] for m in s.methods)])
    for task in s.tasks:
        cells = [task, _num(THRESHOLD * s.best[task], 1)] + [_to_threshold(s.stats[task, m]) for m in s.methods]
        out.append(_row(cells))
    return out


def _equal_time_section(s: Summary) -> list[str]:
    out = ["", "## Return at equal training seconds", "",
           "Mean over seeds of each seed's last evaluation within T training seconds (compile and evaluation "
           "excluded), T the shortest mean final training time among the methods that trained on the task (a "
           "method that stopped earlier is taken at its end). REPPO's seconds are those of its program, which "
           "trains all its seeds at once; Brax trains one seed per process.", ""]  # fmt: skip
    out += _table(["task", "T (s)", *(METHOD_NAMES[m] for m in s.methods)])
    for task in s.tasks:
        seconds, returns = s.equal_time.get(task, (math.nan, {}))
        cells = [task, _num(seconds)] + [_num(returns.get(m, math.nan), 1) if m in returns else "failed"
                                         for m in s.methods]  # fmt: skip
        out.append(_row(cells))
    return out


def _cost_row(task: str, method: str, st: MethodStats) -> str:
    """Env steps, seconds, memory and run count of one method on one task."""
    compile_s = sum(f.compile_s for f in st.runs if f.compile_s is not None) if st.runs else None
    rss = max((f.peak_rss_mb for f in st.runs), default=None)
    dev = [f.device_peak_mb for f in st.runs if f.device_peak_mb is not None]
    failed = sum(f.status != "ok" for f in st.runs)
    return _row([
        task, METHOD_NAMES[method], f"{st.env_steps:,}" if st.n else "-", _num(st.wall_s), _num(compile_s),
        _num(None if rss is None else rss / 1024, 2), _num(max(dev) / 1024 if dev else None, 2),
        f"{len(st.runs) - failed} ok" + (f", {failed} failed" if failed else ""),
    ])  # fmt: skip


def _cost_section(s: Summary) -> list[str]:
    out = ["", "## Cost per task and method", "",
           "Env steps and training seconds (compile excluded) at the last evaluation, mean over seeds; compile "
           "seconds summed over the method's processes; peak host RSS (and device peak on a GPU) of its largest "
           "process (REPPO: all seeds in one process; Brax: one seed per process).", ""]  # fmt: skip
    out += _table(["task", "method", "env steps", "train s", "compile s", "peak RSS GiB", "device peak GiB", "runs"])
    out += [_cost_row(task, m, s.stats[task, m]) for task in s.tasks for m in s.methods]
    return out


def _aggregate_section(s: Summary) -> list[str]:
    """rliable's aggregates per method and, where REPPO and a peer have scores, REPPO's probability of improvement."""
    scales = ", ".join(f"/ {scale:g} ({family})" for family, scale in RETURN_SCALES.items())
    out = ["", "## Aggregates over tasks and seeds (rliable)", "",
           f"Normalised score: final return {scales}. Point estimate [95% stratified-bootstrap interval] of "
           "rliable's `aggregate_iqm`, `aggregate_median` (of the task means), `aggregate_mean` and "
           "`aggregate_optimality_gap` (1 - mean of min(score, 1); lower is better) over the seeds that have a "
           f"final return on every task; {s.reps:,} resamples of the seeds within each task, numpy seed {s.seed}.",
           ""]  # fmt: skip
    out += _table(["method", "seeds x tasks", *AGGREGATES])
    for m in s.methods:
        if m in s.aggregates:
            cells = [f"{len(s.scores[m])} x {len(s.tasks)}"] + [_estimate(s.aggregates[m][a]) for a in AGGREGATES]
        else:
            cells = ["0"] + ["no seed with a final return on every task"] * len(AGGREGATES)
        out.append(_row([METHOD_NAMES[m], *cells]))
    if s.improvement:
        out += ["", "Probability of improvement: the probability that a REPPO run scores above a peer's run on the "
                "same task, averaged over tasks (rliable's `probability_of_improvement`), [95% interval] with the "
                "runs of each method resampled within each task.", "",
                "| REPPO over | probability of improvement |", "|---|---|"]  # fmt: skip
        out += [f"| {METHOD_NAMES[m]} | {_estimate(e)} |" for m, e in s.improvement.items()]
    return out


def _targets_and_notes_section(s: Summary) -> list[str]:
    """The targets' outcomes and the runs' notes (nothing where there are none)."""
    out = []
    if s.targets:
        out += ["", "## Targets", ""] + [f"- {name}: **{outcome}**" for name, outcome in s.targets]
    notes = sorted({(f.task, METHOD_NAMES[f.method], f.seeds, f.note) for st in s.stats.values() for f in st.runs
                    if f.note})  # fmt: skip
    if notes:
        out += ["", "## Notes", ""] + [f"- {task} {name} seed {seeds}: {note}" for task, name, seeds, note in notes]
    return out


def summary_markdown(s: Summary, command: str = "", recomputed_by: str = "") -> str:
    """The summary as Markdown: final returns, time to 90%, return at equal time, cost per run, aggregates, targets,
    notes. ``command``: the bench that wrote the results; ``recomputed_by``: the command that recomputed this
    summary."""
    out = _header_section(command, recomputed_by)
    out += _final_return_section(s)
    out += _threshold_section(s)
    out += _equal_time_section(s)
    out += _cost_section(s)
    out += _aggregate_section(s)
    out += _targets_and_notes_section(s)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------------------
# plots


def plot_suite(
    rows: Sequence[ResultRow],
    out_dir: Path,
    *,
    tasks: Sequence[str],
    methods: Sequence[str],
    reps: int = BOOTSTRAP_REPS,
) -> list[Path]:
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
                mean, lo, hi = mean_and_interval(values, "ci95", reps=reps)
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


def plot_statistics(s: Summary, out_dir: Path) -> list[Path]:
    """``performance_profile.png`` (rliable's score distributions with 95% bands) and ``aggregates.png``
    (rliable's interval plot of :data:`AGGREGATES`) of the methods in ``s.scores``; none when it is empty."""
    if not s.scores:
        return []
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from rliable import plot_utils

    names = {m: METHOD_NAMES[m] for m in s.scores}
    colors = {names[m]: f"C{METHODS.index(m)}" for m in s.scores}
    profiles, bands = performance_profiles({names[m]: x for m, x in s.scores.items()}, reps=s.reps, seed=s.seed)
    fig = Figure(figsize=(7.0, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    plot_utils.plot_performance_profiles(
        profiles, PROFILE_TAUS, performance_profile_cis=bands, colors=colors, ax=ax, legend=True,
        xlabel=r"normalised score $\tau$", ylabel=r"fraction of runs with score > $\tau$", labelsize="medium",
        ticklabelsize="medium", legendsize="medium",
    )  # fmt: skip
    runs = ", ".join(f"{names[m]} {len(x)} x {len(s.tasks)}" for m, x in s.scores.items())
    ax.set_title(f"performance profile, seeds x tasks: {runs}\nband: 95% stratified-bootstrap CI", fontsize="small")
    profile_path = out_dir / PROFILE_FILE
    fig.savefig(profile_path, format="png")

    table = {names[m]: np.array([s.aggregates[m][a] for a in AGGREGATES]) for m in s.scores}  # (metrics, 3)
    points = {name: t[:, 0] for name, t in table.items()}
    intervals = {name: t[:, 1:].T for name, t in table.items()}
    fig, _ = plot_utils.plot_interval_estimates(points, intervals, list(AGGREGATES), list(points), colors=colors,
                                                xlabel="normalised score (95% stratified-bootstrap CI)",
                                                row_height=0.6, xlabel_y_coordinate=-0.3)  # fmt: skip
    aggregates_path = out_dir / AGGREGATES_FILE
    try:
        fig.savefig(aggregates_path, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return [profile_path, aggregates_path]


def write_report(
    out_dir: Path,
    runs: Sequence[RunFacts],
    *,
    tasks: Sequence[str],
    methods: Sequence[str],
    reppo_preset: str,
    command: str = "",
    recomputed_by: str = "",
    reps: int = BOOTSTRAP_REPS,
) -> tuple[str, list[Path]]:
    """Summarise ``out_dir``'s results.csv (``reps`` bootstrap resamples per interval): write summary.md, the curves
    and the statistics plots there; return the summary text and the plots' paths."""
    rows = read_results(out_dir / RESULTS_FILE)
    summary = summarize(rows, runs, tasks=tasks, methods=methods, reference=load_reference(),
                        reppo_preset=reppo_preset, reps=reps)  # fmt: skip
    text = summary_markdown(summary, command=command, recomputed_by=recomputed_by)
    (out_dir / SUMMARY_FILE).write_text(text)
    paths = plot_suite(rows, out_dir, tasks=tasks, methods=methods, reps=reps) + plot_statistics(summary, out_dir)
    return text, paths
