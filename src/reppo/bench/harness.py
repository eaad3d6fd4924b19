"""``reppo bench``: plan the runs of a suite, run each in its own child process, collect and report.

Runs go task by task, methods in the order asked. REPPO trains all seeds of a task in one process (one compiled
program, ``num_seeds``); Brax trains one seed per call, so each Brax seed is its own process. A run's peak host
RSS is its child's ``ru_maxrss`` (``os.wait4``): REPPO's covers its whole seed batch. A run that fails (exit code
or signal) is recorded with the last line of its log, keeps the evaluations it wrote, and the bench carries on.

Output folder: ``results.csv`` (task, method, seed, env_steps, wall_s, eval_return), ``runs.csv`` (one row per
run: status, compile and process seconds, peak memory, note), ``summary.md``, ``curves_env_steps.png``,
``curves_wall_s.png``, and ``runs/<task>__<method>__<seeds>/`` with each run's spec, records, log and (REPPO)
run folder. ``results.csv`` and ``runs.csv`` are rewritten after every run, so an interrupted bench keeps them.

``resume`` (``reppo bench --resume --out FOLDER``) continues a bench in its folder: a run that finished there
(``ok`` in ``runs.csv``) with the same settings is taken over, every other run (failed, missing, or with other
settings, e.g. REPPO's after a change of the suite's REPPO overrides) runs again.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from reppo.bench import report
from reppo.bench.runners import RunSpec, min_budget
from reppo.bench.suites import EVAL_POINTS, METHOD_NAMES, METHODS, SUITES, Suite
from reppo.bench.worker import RECORDS_FILE, SPEC_FILE
from reppo.plot import BOOTSTRAP_REPS

RUNS_FILE = "runs.csv"
RUN_COLUMNS = (
    "task", "method", "seeds", "status", "budget", "env_steps", "wall_s", "compile_s", "process_s", "peak_rss_mb",
    "device_peak_mb", "note",
)  # fmt: skip


class BenchError(ValueError):
    """A bad request; the message is one line naming the value and what is allowed."""


@dataclass(frozen=True)
class BenchPlan:
    """A validated request: which suite, tasks and methods, how many seeds, the budget of each task."""

    suite: Suite
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: int
    budgets: dict[str, int]
    points: int
    out: Path
    resume: bool = False
    """Take over the runs that finished in ``out`` with the same settings instead of running them again."""
    bootstrap_reps: int = BOOTSTRAP_REPS
    """Bootstrap resamples of every interval of the summary and plots."""

    def specs(self) -> list[RunSpec]:
        """The runs, in order: per task, per method, REPPO's seeds together and each Brax seed alone."""
        specs, all_seeds = [], tuple(range(1, self.seeds + 1))
        for task in self.tasks:
            for method in self.methods:
                groups = [all_seeds] if method == "reppo" else [(s,) for s in all_seeds]
                for seeds in groups:
                    spec = RunSpec(task=task, method=method, seeds=seeds, budget=self.budgets[task], folder="",
                                   points=self.points, reppo_preset=self.suite.reppo_preset,
                                   reppo_overrides=self.suite.reppo_overrides_for(task))  # fmt: skip
                    folder = self.out / "runs" / f"{task}__{method}__{spec.seed_label}"
                    specs.append(dataclasses.replace(spec, folder=str(folder)))
        return specs


@dataclass
class RunRecord:
    """One run's outcome (a row of runs.csv) and its evaluation rows."""

    spec: RunSpec
    status: str
    """``ok`` or ``failed``."""
    rows: list[report.ResultRow]
    process_s: float
    peak_rss_mb: float
    compile_s: float | None = None
    device_peak_mb: float | None = None
    note: str = ""

    def facts(self) -> report.RunFacts:
        return report.RunFacts(self.spec.task, self.spec.method, self.spec.seed_label, self.status, self.compile_s,
                               self.peak_rss_mb, self.device_peak_mb, self.note)  # fmt: skip

    def csv_row(self) -> dict[str, object]:
        finals = report.final_rows(self.rows)
        return {
            "task": self.spec.task,
            "method": self.spec.method,
            "seeds": self.spec.seed_label,
            "status": self.status,
            "budget": self.spec.budget,
            "env_steps": max((r.env_steps for r in finals), default=""),
            "wall_s": _fmt(sum(r.wall_s for r in finals) / len(finals) if finals else None),
            "compile_s": _fmt(self.compile_s),
            "process_s": _fmt(self.process_s),
            "peak_rss_mb": _fmt(self.peak_rss_mb),
            "device_peak_mb": _fmt(self.device_peak_mb),
            "note": self.note,
        }


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def default_out(suite: str) -> Path:
    return Path("bench") / f"{suite}__{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def plan_bench(
    suite: str = "cpu",
    seeds: int = 3,
    methods: str = ",".join(METHODS),
    tasks: str | None = None,
    budget: int | None = None,
    points: int = EVAL_POINTS,
    out: str | Path | None = None,
    resume: bool = False,
    bootstrap_reps: int = BOOTSTRAP_REPS,
) -> BenchPlan:
    """Validate a request (raises :class:`BenchError` with one line) and return its plan. Nothing runs."""
    if suite not in SUITES:
        raise BenchError(f"--suite {suite!r} is not a suite; allowed: {', '.join(SUITES)}")
    the_suite = SUITES[suite]
    _check_positive(("--seeds", seeds), ("--points", points), ("--bootstrap-reps", bootstrap_reps))
    chosen = _split(methods)
    for method in chosen:
        if method not in METHODS:
            raise BenchError(f"--methods {method!r} is not a method; allowed: {', '.join(METHODS)}")
    if not chosen or len(set(chosen)) != len(chosen):
        raise BenchError(f"--methods {methods!r} must name each method once; allowed: {', '.join(METHODS)}")
    names = _split(tasks) if tasks is not None else list(the_suite.task_names)
    for task in names:
        if task not in the_suite.task_names:
            raise BenchError(
                f"--tasks {task!r} is not a task of the {suite} suite; allowed: {', '.join(the_suite.task_names)}"
            )
    if not names or len(set(names)) != len(names):
        raise BenchError(f"--tasks {tasks!r} must name each task once; allowed: {', '.join(the_suite.task_names)}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise BenchError(f"--budget {budget!r} must be a positive integer (env steps)")
    budgets = {task: budget if budget is not None else the_suite.budget(task) for task in names}
    for task in names:
        for method in chosen:
            least = min_budget(method, task, the_suite.reppo_preset, the_suite.reppo_overrides_for(task))
            if budgets[task] < least:
                raise BenchError(
                    f"--budget {budgets[task]} is below what {METHOD_NAMES[method]} can run on {task}; "
                    f"allowed: >= {least}"
                )
    if resume and out is None:
        raise BenchError("--resume needs --out, the folder of the bench to continue")
    out_path = Path(out) if out is not None else default_out(suite)
    if (out_path / report.RESULTS_FILE).exists() and not resume:
        raise BenchError(
            f"--out {str(out_path)!r} already holds a benchmark; allowed: a new or empty folder, or --resume to "
            "continue it"
        )
    return BenchPlan(the_suite, tuple(names), tuple(chosen), seeds, budgets, points, out_path, resume, bootstrap_reps)


def _check_positive(*flags: tuple[str, object]) -> None:
    for name, value in flags:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BenchError(f"{name} {value!r} must be a positive integer")


def _peak_rss_mb(usage) -> float:
    """``ru_maxrss`` in MiB (Linux reports KiB, macOS bytes)."""
    return usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _read_records(spec: RunSpec) -> tuple[list[report.ResultRow], dict | None]:
    """The evaluation rows of ``spec``'s folder, sorted by (seed, env steps), and its ``done`` record (None if the
    run did not finish)."""
    rows, done = [], None
    records = Path(spec.folder) / RECORDS_FILE
    for line in records.read_text().splitlines() if records.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the last line of a worker killed while writing it
            continue
        if record["kind"] == "eval":
            rows.append(report.ResultRow(spec.task, spec.method, record["seed"], record["env_steps"],
                                         record["wall_s"], record["eval_return"]))  # fmt: skip
        else:
            done = record
    rows.sort(key=lambda r: (r.seed, r.env_steps))
    return rows, done


def _run_settings(spec: dict) -> dict:
    """What a run's result depends on: its spec without the folder, and without REPPO's settings for a peer."""
    ignored = {"folder"} | (set() if spec["method"] == "reppo" else {"reppo_preset", "reppo_overrides"})
    if not spec.get("peer_overrides"):  # absent from the specs of benches written before the field existed
        ignored.add("peer_overrides")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items() if k not in ignored}


def reuse_run(spec: RunSpec, row: dict[str, str] | None) -> RunRecord | None:
    """The record of ``spec`` from a run that finished in its folder with the same settings (``row``: its line of
    the folder's ``runs.csv``), or None when it has to run."""
    spec_file = Path(spec.folder) / SPEC_FILE
    if row is None or row["status"] != "ok" or not spec_file.exists():
        return None
    if _run_settings(json.loads(spec_file.read_text())) != _run_settings(dataclasses.asdict(spec)):
        return None
    rows, done = _read_records(spec)
    if done is None:
        return None
    number = lambda key: float(row[key]) if row[key] else None
    return RunRecord(spec, "ok", rows, float(row["process_s"]), float(row["peak_rss_mb"]), number("compile_s"),
                     number("device_peak_mb"), row["note"])  # fmt: skip


def read_runs(path: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    """The rows of a ``runs.csv`` by (task, method, seeds); empty when there is none."""
    if not path.exists():
        return {}
    with open(path, newline="") as fh:
        return {(r["task"], r["method"], r["seeds"]): r for r in csv.DictReader(fh)}


TIMED_OUT = 124
"""Exit code of ``timeout`` when it stopped the run."""


def run_unit(spec: RunSpec, timeout_s: float | None = None) -> RunRecord:
    """Run ``spec`` in a child process (``python -m reppo.bench.worker``) and collect what it recorded.

    ``timeout_s``: the child runs under ``timeout`` (SIGTERM after that many seconds, SIGKILL 10 s later); a run
    stopped so is ``failed`` with a note saying it, and keeps the evaluations it recorded before."""
    folder = Path(spec.folder)
    shutil.rmtree(folder, ignore_errors=True)  # a rerun (--resume) starts from an empty folder
    folder.mkdir(parents=True)
    (folder / SPEC_FILE).write_text(json.dumps(dataclasses.asdict(spec), indent=2))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # device peak = what the run used, not a pool
    log = folder / "log.txt"
    start = time.perf_counter()
    with open(log, "w") as fh:
        command = [sys.executable, "-m", "reppo.bench.worker", str(folder)]
        if timeout_s is not None:
            command = ["timeout", "--kill-after=10", f"{max(timeout_s, 1.0):.0f}", *command]
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    process_s = time.perf_counter() - start
    rows, done = _read_records(spec)
    record = RunRecord(spec, "ok", rows, process_s, _peak_rss_mb(usage))
    if proc.returncode != 0 or done is None:
        code = proc.returncode
        why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        if timeout_s is not None and code in (TIMED_OUT, 128 + 9):
            why = f"stopped by its time limit of {timeout_s:.0f} s"
        record.status, record.note = "failed", f"{why}: {_last_line(log)} (log: {log})"
        return record
    record.compile_s = done["compile_s"]
    peak = done.get("device_peak_bytes")
    record.device_peak_mb = None if peak is None else peak / 2**20
    record.note = done.get("note", "")
    return record


def write_runs(path: Path, records: list[RunRecord]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RUN_COLUMNS)
        writer.writeheader()
        writer.writerows(r.csv_row() for r in records)


def run_bench(plan: BenchPlan, echo: Callable[[str], None] = print) -> list[RunRecord]:
    """Run every spec of ``plan``, write the output folder, print and save the summary; return the records."""
    plan.out.mkdir(parents=True, exist_ok=True)
    specs = plan.specs()
    echo(f"reppo bench: {plan.suite.name} suite, {len(plan.tasks)} tasks x {', '.join(plan.methods)}, "
         f"{plan.seeds} seeds: {len(specs)} runs; output in {plan.out}")  # fmt: skip
    previous = read_runs(plan.out / RUNS_FILE) if plan.resume else {}
    records: list[RunRecord] = []
    for i, spec in enumerate(specs, 1):
        about = f"[{i}/{len(specs)}] {spec.task} {METHOD_NAMES[spec.method]} seed {spec.seed_label}"
        record = reuse_run(spec, previous.get((spec.task, spec.method, spec.seed_label)))
        if record is not None:
            echo(f"reppo bench: {about}: finished before with the same settings, taken over")
        else:
            echo(f"reppo bench: {about}, {spec.budget:,} env steps ...")
            record = run_unit(spec)
            last = record.csv_row()
            echo(f"reppo bench:   {record.status} in {record.process_s:.0f} s (train {last['wall_s'] or '-'} s, "
                 f"compile {last['compile_s'] or '-'} s, peak RSS {record.peak_rss_mb / 1024:.2f} GiB)"
                 + (f"; {record.note}" if record.note else ""))  # fmt: skip
        records.append(record)
        report.write_results(plan.out / report.RESULTS_FILE, [row for r in records for row in r.rows])
        write_runs(plan.out / RUNS_FILE, records)
    text, _ = report.write_report(plan.out, [r.facts() for r in records], tasks=plan.tasks, methods=plan.methods,
                                  reppo_preset=plan.suite.reppo_preset, command=_command(plan),
                                  reps=plan.bootstrap_reps)  # fmt: skip
    echo(text)
    echo(f"reppo bench: wrote {plan.out}/{report.RESULTS_FILE}, {RUNS_FILE}, {report.SUMMARY_FILE} and plots")
    return records


def read_run_facts(path: Path) -> list[report.RunFacts]:
    """The runs of a ``runs.csv`` as the summary takes them ([] when there is none)."""
    number = lambda cell: float(cell) if cell else None
    return [report.RunFacts(r["task"], r["method"], r["seeds"], r["status"], number(r["compile_s"]),
                            float(r["peak_rss_mb"]), number(r["device_peak_mb"]), r["note"])
            for r in read_runs(path).values()]  # fmt: skip


def report_bench(
    suite: str = "cpu",
    methods: str | None = None,
    tasks: str | None = None,
    out: str | Path | None = None,
    bootstrap_reps: int = BOOTSTRAP_REPS,
) -> tuple[str, list[Path]]:
    """Recompute summary.md and the plots of the bench in ``out`` from its results.csv and runs.csv
    (``reppo bench --report-only``); nothing runs. ``tasks`` and ``methods`` default to those in results.csv, in
    the suite's order. Raises :class:`BenchError` with one line for a bad request."""
    if suite not in SUITES:
        raise BenchError(f"--suite {suite!r} is not a suite; allowed: {', '.join(SUITES)}")
    _check_positive(("--bootstrap-reps", bootstrap_reps))
    if out is None:
        raise BenchError("--report-only needs --out, the folder of a bench (with its results.csv)")
    out = Path(out)
    if not (out / report.RESULTS_FILE).is_file():
        raise BenchError(f"--out {str(out)!r} has no {report.RESULTS_FILE}; allowed: the folder of a bench")
    the_suite = SUITES[suite]
    rows = report.read_results(out / report.RESULTS_FILE)
    if not rows:
        raise BenchError(f"--out {str(out)!r}: {report.RESULTS_FILE} has no evaluation rows")
    stored_tasks = {r.task for r in rows}
    stray = sorted(stored_tasks - set(the_suite.task_names))
    if stray:
        raise BenchError(f"{report.RESULTS_FILE} task {stray[0]!r} is not a task of the {suite} suite; allowed: "
                         f"{', '.join(the_suite.task_names)} (or another --suite)")  # fmt: skip
    chosen = {}
    for flag, value, allowed, stored in (("--tasks", tasks, the_suite.task_names, stored_tasks),
                                         ("--methods", methods, METHODS, {r.method for r in rows})):  # fmt: skip
        names = _split(value) if value is not None else [n for n in allowed if n in stored]
        for name in names:
            if name not in allowed or name not in stored:
                raise BenchError(f"{flag} {name!r} has no results in {out / report.RESULTS_FILE}; allowed: "
                                 f"{', '.join(n for n in allowed if n in stored)}")  # fmt: skip
        if not names or len(set(names)) != len(names):
            raise BenchError(f"{flag} {value!r} must name each once; allowed: {', '.join(allowed)}")
        chosen[flag] = tuple(names)
    previous = (out / report.SUMMARY_FILE).read_text() if (out / report.SUMMARY_FILE).is_file() else ""
    prefix = "Command: `"
    command = next((x[len(prefix) : -1] for x in previous.splitlines() if x.startswith(prefix) and x.endswith("`")), "")
    recomputed_by = f"reppo bench --report-only --suite {suite}"
    if tasks is not None:
        recomputed_by += f" --tasks {','.join(chosen['--tasks'])}"
    if methods is not None:
        recomputed_by += f" --methods {','.join(chosen['--methods'])}"
    if bootstrap_reps != BOOTSTRAP_REPS:
        recomputed_by += f" --bootstrap-reps {bootstrap_reps}"
    return report.write_report(out, read_run_facts(out / RUNS_FILE), tasks=chosen["--tasks"],
                               methods=chosen["--methods"], reppo_preset=the_suite.reppo_preset, command=command,
                               recomputed_by=f"{recomputed_by} --out {out}", reps=bootstrap_reps)  # fmt: skip


def _command(plan: BenchPlan) -> str:
    parts = ["reppo bench", f"--suite {plan.suite.name}", f"--seeds {plan.seeds}"]
    if plan.methods != METHODS:
        parts.append(f"--methods {','.join(plan.methods)}")
    if plan.tasks != plan.suite.task_names:
        parts.append(f"--tasks {','.join(plan.tasks)}")
    defaults = {t.task: t.env_steps for t in plan.suite.tasks}
    if any(plan.budgets[t] != defaults.get(t) for t in plan.tasks):
        parts.append(f"--budget {plan.budgets[plan.tasks[0]]}")
    if plan.points != EVAL_POINTS:
        parts.append(f"--points {plan.points}")
    if plan.bootstrap_reps != BOOTSTRAP_REPS:
        parts.append(f"--bootstrap-reps {plan.bootstrap_reps}")
    if plan.resume:
        parts.append("--resume")
    return " ".join(parts) + f" --out {plan.out}"
