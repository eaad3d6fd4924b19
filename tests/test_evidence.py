"""GPU evidence kit (``scripts/gpu-evidence.sh``, ``reppo.bench.evidence``): the plan within a budget (with a fake
clock and runner), the output folder against its own results.csv, runs stopped by their time limit, bad input, the
bundle's pins, and (slow) the whole ``--tiny`` path on the CPU."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import subprocess
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from reppo.bench import evidence, report
from reppo.bench.evidence import GPU_RATES, PROFILES, Orchestrator, Unit, estimate_s, finalize
from reppo.bench.harness import RunRecord, run_unit
from reppo.bench.runners import RunSpec

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu-evidence.sh"
PNG = b"\x89PNG\r\n\x1a\n"


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


class FakeMachine:
    """A clock and a runner that write what a worker writes (evaluations, then ``done``) and take ``speed`` times
    their estimate, or are stopped by their time limit."""

    def __init__(self, speed: float, rng: np.random.Generator):
        self.now, self.speed, self.rng = 1_000.0, speed, rng
        self.calls: list[tuple[RunSpec, float]] = []

    def clock(self) -> float:
        return self.now

    def run(self, spec: RunSpec, timeout: float) -> RunRecord:
        self.calls.append((spec, timeout))
        unit = Unit("x", spec.task, spec.method, len(spec.seeds), spec.budget, points=spec.points)
        took = self.speed * estimate_s(unit, GPU_RATES)
        stopped = took > timeout
        took = min(took, timeout)
        folder = Path(spec.folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spec.json").write_text(json.dumps(dataclasses.asdict(spec)))
        train = 0.7 * took
        rows = []
        points = [spec.budget * (i + 1) // spec.points for i in range(spec.points)]
        for seed in spec.seeds:
            for i, steps in enumerate(points):
                rows.append({"kind": "eval", "seed": seed, "env_steps": steps, "wall_s": train * (i + 1) / len(points),
                             "eval_return": float(self.rng.uniform(0, 1000))})  # fmt: skip
        lines = [json.dumps(r) for r in rows] + ([] if stopped else [json.dumps({"kind": "done", "compile_s": 9.0})])
        if stopped and spec.method == "reppo":  # REPPO records at its end: a stopped run left only metrics.csv
            lines = []
            (folder / "reppo").mkdir()
            with open(folder / "reppo" / "metrics.csv", "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["env_steps", "iteration", "wall_s", "seed", "eval/episode_return", "perf/sps"])
                for r in rows[: len(rows) // 2]:
                    writer.writerow([r["env_steps"], 1, r["wall_s"], r["seed"], r["eval_return"], 1.0])
                fh.write("12,3")  # a partial last line
        (folder / "records.jsonl").write_text("".join(line + "\n" for line in lines))
        self.now += took
        status, note = ("failed", f"stopped by its time limit of {timeout:.0f} s") if stopped else ("ok", "")
        return RunRecord(spec, status, [], took, 1234.0, None if stopped else 9.0, None, note)


def _kit(tmp_path, budget_s: float, speed: float = 1.0, t1: Path | None = None, profile: str = "gpu"):
    machine = FakeMachine(speed, np.random.default_rng(int(budget_s * 7 + speed * 13)))
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir(parents=True)
    reference = REPO.parent / "shared" / "reference" / "dmc_final_returns.csv"
    meta = {"profile": profile, "budget_min": budget_s / 60, "commit": "abc1234", "device": "a fake H100",
            "reference": str(reference) if reference.exists() else None}  # fmt: skip
    (work / evidence.META_FILE).write_text(json.dumps(meta))
    kit = Orchestrator(PROFILES[profile], work, out, deadline=machine.now + budget_s, runner=machine.run,
                       clock=machine.clock, echo=lambda line: None, t1_model=lambda: t1)  # fmt: skip
    return kit, machine


def _check_folder(out: Path, with_log: bool = False) -> tuple[list[dict], list[dict], str]:
    """The output folder: only its files (at most 8, no folders), parseable, the summary's numbers from results.csv."""
    names = sorted(p.name for p in out.iterdir())
    want = sorted(evidence.OUTPUT_FILES if with_log else set(evidence.OUTPUT_FILES) - {evidence.LOG_FILE})
    assert names == want and len(names) <= 8 and all((out / n).is_file() for n in names)
    for name in (evidence.CURVES_FILE, evidence.THROUGHPUT_FILE):
        assert (out / name).read_bytes()[:8] == PNG
    results, runs = _csv(out / report.RESULTS_FILE), _csv(out / evidence.RUNS_FILE)
    with open(out / evidence.RUNS_FILE, newline="") as fh:
        assert next(csv.reader(fh)) == list(evidence.RUN_COLUMNS)
    summary = (out / report.SUMMARY_FILE).read_text()
    published = evidence.load_published(REPO.parent / "shared" / "reference" / "dmc_final_returns.csv")
    for run in runs:
        mine = [r for r in results if r["task"] == run["task"] and r["method"] == run["method"]]
        if run["status"] == "skipped":
            assert not mine and "skipped" in run["note"] + summary
            continue
        last = {}
        for r in mine:  # each seed's last evaluation
            if r["seed"] not in last or int(r["env_steps"]) >= int(last[r["seed"]]["env_steps"]):
                last[r["seed"]] = r
        steps = max(int(r["env_steps"]) for r in last.values())
        train = max(float(r["wall_s"]) for r in last.values())
        assert int(run["env_steps"]) == steps and float(run["train_s"]) == pytest.approx(train, abs=0.051)
        assert float(run["sps_per_seed"]) == pytest.approx(steps / train, abs=0.51)
        assert float(run["sps_total"]) == pytest.approx(len(last) * steps / train, abs=0.51)
        assert f"| {float(run['sps_per_seed']):,.0f} |" in summary
        if run["method"] == "reppo" and run["task"] != evidence.T1_TASK:
            finals = [float(r["eval_return"]) for r in last.values()]
            mean = sum(finals) / len(finals)
            row = next(line for line in summary.splitlines() if line.startswith(f"| {run['task']} | {steps:,} |"))
            assert f"{mean:.1f} [" + ", ".join(f"{v:.1f}" for v in finals) + "]" in row
            ppo = published.get((run["task"], "ppo"))
            if ppo is not None:
                assert f"| {ppo[0]:,.1f} |" in row and ("**met**" if mean >= ppo[0] else "**missed**") in row
    return results, runs, summary


def test_plan_runs_the_phases_in_order_of_value_when_all_fits(tmp_path):
    kit, machine = _kit(tmp_path, budget_s=3_600)
    kit.run()
    got = [(s.task, s.method, len(s.seeds)) for s, _ in machine.calls]
    assert got == [("CartpoleSwingup", "reppo", 2), ("CheetahRun", "reppo", 1), ("WalkerRun", "reppo", 1),
                   ("CheetahRun", "ppo", 1), ("CartpoleBalance", "reppo", 1)]  # fmt: skip
    assert all(s.budget == 20_000_000 and s.reppo_preset == "paper-small" for s, _ in machine.calls[:3])
    assert machine.calls[3][0].budget == 9_830_400 and machine.calls[3][0].peer_overrides == {}
    _, runs, summary = _check_folder(kit.out)
    assert [(r["phase"], r["status"]) for r in runs] == [
        ("dmc", "ok"), ("dmc", "ok"), ("dmc", "ok"), ("t1", "skipped"), ("throughput", "ok"), ("extra", "ok")
    ]  # fmt: skip
    assert "T1JoystickFlatTerrain cannot load here" in summary and "a fake H100" in summary and "abc1234" in summary
    assert "REPPO / Brax PPO env steps/s on CheetahRun, one seed:" in summary


def test_plan_skips_what_would_not_fit_and_never_runs_past_the_budget(tmp_path):
    budget = 560.0  # CartpoleSwingup with 2 seeds and CheetahRun do not both fit; with 1 seed they do
    kit, machine = _kit(tmp_path, budget_s=budget)
    kit.run()
    got = [(s.task, s.method, len(s.seeds)) for s, _ in machine.calls]
    assert got == [("CartpoleSwingup", "reppo", 1), ("CheetahRun", "reppo", 1)]
    assert machine.now <= 1_000 + budget - GPU_RATES.finalize_s
    for _, timeout in machine.calls:
        assert timeout <= budget - GPU_RATES.finalize_s
    _, runs, summary = _check_folder(kit.out)
    skipped = [(r["phase"], r["task"]) for r in runs if r["status"] == "skipped"]
    assert skipped == [("dmc", "WalkerRun"), ("t1", "T1JoystickFlatTerrain"), ("throughput", "CartpoleSwingup"),
                       ("extra", "CartpoleBalance")]  # fmt: skip
    assert summary.count("would not fit the budget") == 3


def test_a_slow_machine_is_stopped_by_the_time_limit_and_keeps_its_evaluations(tmp_path):
    kit, machine = _kit(tmp_path, budget_s=400, speed=3.0)  # every run takes three times its estimate
    kit.run()
    assert len(machine.calls) == 1
    results, runs, summary = _check_folder(kit.out)
    first = runs[0]
    assert first["status"] == "failed" and "stopped by its time limit" in first["note"]
    assert "read from its metrics.csv" in first["note"] and results  # the rows before the stop
    assert machine.now <= 1_000 + 400 - GPU_RATES.finalize_s


def test_estimates_follow_the_measured_speed(tmp_path):
    """After a run twice as fast as estimated, the next estimates halve, so more fits."""
    kit, machine = _kit(tmp_path, budget_s=560, speed=0.5)
    kit.run()
    assert kit.scale == pytest.approx(0.5)
    got = [(s.task, s.method, len(s.seeds)) for s, _ in machine.calls]
    assert got[:4] == [("CartpoleSwingup", "reppo", 1), ("CheetahRun", "reppo", 1), ("WalkerRun", "reppo", 1),
                       ("CartpoleSwingup", "ppo", 1)]  # fmt: skip


def test_t1_runs_time_boxed_when_its_model_is_there(tmp_path):
    kit, machine = _kit(tmp_path, budget_s=3_600, t1=tmp_path)
    kit.run()
    t1 = [(s, t) for s, t in machine.calls if s.task == evidence.T1_TASK]
    assert len(t1) == 1
    spec = t1[0][0]
    assert spec.reppo_overrides["critic_width"] == 1024 and spec.reppo_preset == "paper-small"
    assert spec.budget % 32_768 == 0 and 0 < spec.budget <= 20_000_000
    unit = Unit("t1", spec.task, "reppo", 1, spec.budget, points=spec.points)
    assert estimate_s(unit, GPU_RATES) <= PROFILES["gpu"].t1_box_s + 1e-6
    _, _, summary = _check_folder(kit.out)
    assert "## T1JoystickFlatTerrain\n\n- final return" in summary


def test_t1_is_skipped_when_too_few_steps_would_fit(tmp_path):
    kit, machine = _kit(tmp_path, budget_s=520, speed=0.7, t1=tmp_path)  # two DM Control tasks, then ~170 s left
    kit.run()
    assert [s.task for s, _ in machine.calls] == ["CartpoleSwingup", "CheetahRun", "CartpoleSwingup"]
    _, runs, summary = _check_folder(kit.out)
    t1 = next(r for r in runs if r["phase"] == "t1")
    assert t1["status"] == "skipped" and "(at least 5,000,000 wanted)" in t1["note"]


def test_a_run_in_flight_when_the_kit_stopped_is_reported(tmp_path):
    kit, machine = _kit(tmp_path, budget_s=3_600)
    unit = kit.dmc_unit(PROFILES["gpu"].dmc[0], "dmc")
    machine.run(unit.spec(kit.work), timeout=1.0)  # as if the kit were killed while this ran
    finalize(kit.work, kit.out)
    _, runs, summary = _check_folder(kit.out)
    assert runs[0]["status"] == "failed" and "time ran out" in runs[0]["note"]


def test_nothing_ran_still_gives_a_well_formed_folder(tmp_path):
    """A kit that stopped before its first run (a broken bundle, say) still leaves the folder, saying so."""
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    finalize(work, out)
    results, runs, summary = _check_folder(out)
    assert results == [] and runs == [] and "- nothing ran" in summary
    assert (out / report.RESULTS_FILE).read_text().strip() == ",".join(report.RESULT_COLUMNS)


def test_chosen_tasks_are_in_the_reference_with_ppo_behind_reppo():
    published = evidence.load_published(REPO.parent / "shared" / "reference" / "dmc_final_returns.csv")
    if not published:
        pytest.skip("../shared/reference/dmc_final_returns.csv is not beside this checkout")
    from reppo.bench.suites import PAPER_TASKS

    for task in PROFILES["gpu"].dmc + PROFILES["gpu"].extra:
        assert task.task in PAPER_TASKS
        assert published[task.task, "ppo"][0] < published[task.task, "reppo_small_data"][0]
    assert (evidence.T1_TASK, "reppo_small_data") in published


def test_bundle_pins_are_the_versions_tested_here():
    """scripts/gpu-bundle.txt pins what the device lacks to the versions of this environment (a pin that drifted
    from what the tests run would carry untested code to the GPU)."""
    lines = (REPO / "scripts" / "gpu-bundle.txt").read_text().splitlines()
    pins = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", p) for p in pins), pins
    for pin in pins:
        name, version = pin.split("==")
        assert metadata.version(name) == version, pin
    assert {"playground", "brax", "mujoco", "mujoco-mjx", "tyro", "tensorboardX"} <= {p.split("==")[0] for p in pins}


def test_worker_points_playground_at_the_carried_robot_models(tmp_path, monkeypatch):
    from mujoco_playground._src import mjx_env

    from reppo.bench.worker import MENAGERIE_ENV, use_menagerie_path

    before = mjx_env.MENAGERIE_PATH
    try:
        monkeypatch.delenv(MENAGERIE_ENV, raising=False)
        assert use_menagerie_path() is None and mjx_env.MENAGERIE_PATH == before
        (tmp_path / "booster_t1").mkdir()
        (tmp_path / "booster_t1" / "t1.xml").write_text("<mujoco/>")
        monkeypatch.setenv(MENAGERIE_ENV, str(tmp_path))
        assert use_menagerie_path() == tmp_path and str(mjx_env.MENAGERIE_PATH) == str(tmp_path)
        assert evidence.find_t1_model() == tmp_path
    finally:
        mjx_env.MENAGERIE_PATH = before


def test_run_unit_stops_a_run_at_its_time_limit(tmp_path):
    spec = RunSpec("CartpoleBalance", "reppo", (1,), 10_000_000, str(tmp_path / "run"), points=1)
    start = time.perf_counter()
    record = run_unit(spec, timeout_s=2)
    assert time.perf_counter() - start < 30
    assert record.status == "failed" and record.note.startswith("stopped by its time limit of 2 s")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--budget-min", "abc"], "--budget-min 'abc' must be a positive number of minutes"),
        (["--budget-min", "0"], "--budget-min '0' must be a positive number of minutes"),
        (["--budget-min"], "--budget-min needs a value"),
        (["--gpus", "2"], "unknown argument '--gpus'; allowed: --budget-min MINUTES"),
    ],
)
def test_script_bad_input_is_one_line_and_exit_2(args, needle, tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path / "out"), *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--profile", "huge"], "--profile 'huge' is not a profile; allowed: gpu, tiny"),
        (["--budget-min", "-1"], "--budget-min -1.0 must be a positive number of minutes"),
        (["--reference", "/no/such.csv"], "--reference '/no/such.csv' is not a file"),
    ],
)
def test_module_bad_input_is_one_line_and_exit_2(args, needle, tmp_path, capsys):
    code = evidence.main(["run", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), *args])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "work").exists()


@pytest.mark.slow  # the whole --tiny path: REPPO (2 seeds) and Brax PPO, real child processes, about 2 minutes
def test_tiny_kit_writes_a_well_formed_folder(tmp_path):
    out, work = tmp_path / "gpu-evidence", tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    # A budget with room: the tiny runs' compilation takes 2-5 minutes on 2 cores, far longer on a loaded machine,
    # and the kit stops a run at its time limit.
    proc = subprocess.run(["bash", str(SCRIPT), "--tiny", "--budget-min", "20", "--out", str(out), "--work", str(work)],
                          capture_output=True, text=True, timeout=1500, env=env)  # fmt: skip
    took = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results, runs, summary = _check_folder(out, with_log=True)
    assert [(r["phase"], r["task"], r["method"], r["status"]) for r in runs] == [
        ("dmc", "CartpoleSwingup", "reppo", "ok"), ("t1", evidence.T1_TASK, "reppo", "skipped"),
        ("throughput", "CartpoleSwingup", "ppo", "ok"),
    ]  # fmt: skip
    reppo = [(r["seed"], int(r["env_steps"])) for r in results if r["method"] == "reppo"]
    assert reppo == [("1", 1_024), ("1", 2_048), ("2", 1_024), ("2", 2_048)]
    assert [int(r["env_steps"]) for r in results if r["method"] == "ppo"] == [0, 256]
    assert all(np.isfinite(float(r["eval_return"])) for r in results)
    assert "not evidence" in summary and "REPPO / Brax PPO" not in summary  # REPPO ran 2 seeds there
    log = (out / evidence.LOG_FILE).read_text()
    assert "gpu-evidence: tiny profile" in log and "used" in log.splitlines()[-1]
    meta = json.loads((work / evidence.META_FILE).read_text())
    assert meta["profile"] == "tiny" and meta["budget_min"] == 20.0
    assert took < 1200
