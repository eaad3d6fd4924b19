"""``reppo bench``: bad input (one line, exit 2), the summary's statistics against independent computations, the
Brax schedules, the compile-free clock, real runs through the child-process harness (a crash included) and
``--resume``."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.stats
from rliable import library, metrics

from reppo.bench import report
from reppo.bench.harness import BenchError, BenchPlan, plan_bench, reuse_run, run_bench
from reppo.bench.runners import (
    RunSpec,
    peer_config,
    ppo_schedule,
    published_config,
    reppo_config,
    sac_schedule,
    union_length,
)
from reppo.bench.suites import BRAX_EVAL_EPISODES, CPU_REPPO_OVERRIDES, METHODS, PAPER_TASKS, SUITES, TaskBudget
from reppo.cli import main
from reppo.config import preset_config
from reppo.plot import BOOTSTRAP_SEED

# --------------------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--suite", "gpu"], "--suite 'gpu' is not a suite; allowed: cpu, paper"),
        (["--seeds", "0"], "--seeds 0 must be a positive integer"),
        (["--seeds", "abc"], "--seeds 'abc' must be a positive integer"),
        (["--points=1.5"], "--points '1.5' must be a positive integer"),
        (["--bootstrap-reps", "0"], "--bootstrap-reps 0 must be a positive integer"),
        (["--methods", "reppo,trpo"], "--methods 'trpo' is not a method; allowed: reppo, ppo, ppo_small, sac"),
        (["--methods", "sac,sac"], "--methods 'sac,sac' must name each method once"),
        (["--tasks", "HopperHop"], "--tasks 'HopperHop' is not a task of the cpu suite; allowed: CartpoleBalance"),
        (["--budget", "-3"], "--budget -3 must be a positive integer"),
        (["--budget", "1e3"], "--budget 1000 is below what REPPO can run on CartpoleBalance; allowed: >= 2048"),
        (["--methods", "sac", "--budget", "8e3"], "--budget 8000 is below what Brax SAC can run on"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", *args, "--out", str(out)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("reppo: error: ") and needle in lines[0], lines
    assert not out.exists()


def test_existing_output_is_refused_before_anything_runs(tmp_path):
    (tmp_path / report.RESULTS_FILE).write_text("task\n")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "reppo.cli", "bench", "--out", str(tmp_path), "--budget", "9472"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        f"reppo: error: --out '{tmp_path}' already holds a benchmark; allowed: a new or empty folder, "
        "or --resume to continue it"
    ]
    assert time.perf_counter() - start < 60


def test_suites():
    cpu = SUITES["cpu"]
    assert cpu.task_names == ("CartpoleBalance", "PendulumSwingup", "ReacherEasy", "CheetahRun", "FingerSpin")
    assert all(t.env_steps >= 8_320 for t in cpu.tasks)  # above one REPPO iteration and Brax SAC's prefill
    assert cpu.reppo_preset == "cpu" and SUITES["paper"].reppo_preset == "paper-small"
    assert len(PAPER_TASKS) == 23 and all(t.env_steps == 50_000_000 for t in SUITES["paper"].tasks)
    from mujoco_playground._src import dm_control_suite

    assert set(PAPER_TASKS) <= set(dm_control_suite.ALL_ENVS)
    reference = Path(__file__).resolve().parents[2] / "shared" / "reference" / "dmc_final_returns.csv"
    if reference.is_file():  # the paper's 23 DM Control tasks: the reference file's tasks without G1/T1 joystick
        with open(reference, newline="") as fh:
            tasks = {r["task"] for r in csv.DictReader(fh)}
        assert set(PAPER_TASKS) == {t for t in tasks if "Joystick" not in t}


@pytest.mark.parametrize("seed", range(3))
def test_task_overrides_go_on_top_of_the_suite_and_only_to_reppo(seed, tmp_path, monkeypatch):
    """A task's REPPO overrides replace the suite's field by field, reach that task's REPPO run and its budget
    check, and leave the other tasks and the peers' runs alone."""
    rng = np.random.default_rng(seed)
    suite_envs, task_envs, epochs = (int(x) for x in rng.choice([16, 32, 64, 128], 3, replace=False))
    budget = int(rng.integers(1, 5)) * 128 * 16 * 10
    suite = dataclasses.replace(
        SUITES["cpu"],
        tasks=(TaskBudget("CartpoleBalance", budget, {"num_envs": task_envs}), TaskBudget("ReacherEasy", budget)),
        reppo_overrides={"num_envs": suite_envs, "num_epochs": epochs},
    )
    assert suite.reppo_overrides_for("CartpoleBalance") == {"num_envs": task_envs, "num_epochs": epochs}
    assert suite.reppo_overrides_for("ReacherEasy") == {"num_envs": suite_envs, "num_epochs": epochs}
    assert suite.reppo_overrides_for("NoSuchTask") == {"num_envs": suite_envs, "num_epochs": epochs}
    plan = BenchPlan(suite, suite.task_names, METHODS, 2, {t: budget for t in suite.task_names}, 10, tmp_path)
    for spec in plan.specs():
        want = task_envs if spec.task == "CartpoleBalance" else suite_envs
        assert spec.reppo_overrides["num_envs"] == want
        if spec.method == "reppo":
            config = reppo_config(spec)
            assert (config.num_envs, config.num_epochs, config.env) == (want, epochs, spec.task)
            assert config.total_steps == budget // (want * 16) * want * 16
    # The budget check uses the task's batch: one iteration of 1,024 envs is 16,384 env steps.
    monkeypatch.setitem(SUITES, "cpu", dataclasses.replace(
        suite, tasks=(TaskBudget("CartpoleBalance", 16_000, {"num_envs": 1024}), TaskBudget("ReacherEasy", 16_000)),
    ))  # fmt: skip
    assert plan_bench("cpu", methods="reppo", tasks="ReacherEasy", seeds=1, out=tmp_path / "a").tasks == (
        "ReacherEasy",
    )
    with pytest.raises(BenchError, match="^--budget 16000 is below what REPPO can run on CartpoleBalance; allowed: "
                                         ">= 16384$"):  # fmt: skip
        plan_bench("cpu", methods="reppo", seeds=1, out=tmp_path / "b")


def test_cpu_suite_gives_every_method_the_same_env_steps(tmp_path):
    """Every cpu-suite budget is a whole number of REPPO iterations at that task's settings."""
    specs = plan_bench("cpu", methods="reppo", out=tmp_path).specs()
    assert [s.task for s in specs] == list(SUITES["cpu"].task_names)
    for spec in specs:
        assert reppo_config(spec).total_steps == spec.budget == SUITES["cpu"].budget(spec.task)


def test_every_method_evaluates_as_many_episodes_as_brax():
    """Brax PPO and SAC evaluate ``num_eval_envs`` episodes (their default: the published configs do not set it);
    every suite gives REPPO the same number."""
    from brax.training.agents.ppo import train as ppo_train
    from brax.training.agents.sac import train as sac_train

    for method, train_fn in (("ppo", ppo_train.train), ("sac", sac_train.train)):
        assert inspect.signature(train_fn).parameters["num_eval_envs"].default == BRAX_EVAL_EPISODES
        for task in SUITES["cpu"].task_names:
            assert "num_eval_envs" not in published_config(method, task)
    for suite in SUITES.values():
        spec = RunSpec(task=suite.tasks[0].task, method="reppo", seeds=(1, 2), budget=suite.tasks[0].env_steps,
                       points=10, folder="unused", reppo_preset=suite.reppo_preset,
                       reppo_overrides=suite.reppo_overrides_for(suite.tasks[0].task))  # fmt: skip
        assert reppo_config(spec).eval_envs == BRAX_EVAL_EPISODES


# --------------------------------------------------------------------------------------------------------------
# statistics of the summary


TASKS = ("CartpoleBalance", "ReacherEasy", "CheetahRun")
REPS = 300
"""Bootstrap resamples in these tests (the summary's default is reppo.plot.BOOTSTRAP_REPS)."""


def _random_rows(rng: np.random.Generator, tasks=TASKS, seeds=5, points=8) -> list[report.ResultRow]:
    rows = []
    for task in tasks:
        for m, method in enumerate(METHODS):
            steps = np.cumsum(rng.integers(1, 5, points)) * 1000 * (m + 1)
            for seed in range(1, seeds + 1):
                walls = np.cumsum(rng.uniform(0.5, 2.0, points))
                returns = np.clip(np.cumsum(rng.normal(60, 80, points)), 0, 1000)
                rows += [report.ResultRow(task, method, seed, int(s), float(w), float(r))
                         for s, w, r in zip(steps, walls, returns, strict=True)]  # fmt: skip
    return rows


def _bootstrap_mean(values: np.ndarray, reps: int = REPS) -> tuple[float, float, float]:
    """Percentile bootstrap of the mean, written out: each resample draws the seeds' indices from numpy's global
    generator seeded with BOOTSTRAP_SEED, as rliable's bootstrap does (``np.random.choice``)."""
    np.random.seed(BOOTSTRAP_SEED)
    means = [values[np.random.choice(len(values), len(values))].mean() for _ in range(reps)]
    return values.mean(), np.percentile(means, 2.5), np.percentile(means, 97.5)


def _brute_force_time_to(rows: list[report.ResultRow], threshold: float):
    for steps in sorted({r.env_steps for r in rows}):
        at = [r for r in rows if r.env_steps == steps]
        if sum(r.eval_return for r in at) / len(at) >= threshold:
            return steps, sum(r.wall_s for r in at) / len(at)
    return None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summary_statistics_match_independent_computations(seed):
    rng = np.random.default_rng(100 + seed)
    rows = _random_rows(rng)
    s = report.summarize(rows, [], tasks=TASKS, methods=METHODS, reference={}, reppo_preset="cpu", reps=REPS)
    for task in TASKS:
        finals = {}
        for method in METHODS:
            mine = [r for r in rows if r.task == task and r.method == method]
            last = max(r.env_steps for r in mine)
            values = np.array([r.eval_return for r in mine if r.env_steps == last])
            finals[method] = values
            mean, lo, hi = _bootstrap_mean(values)
            st = s.stats[task, method]
            np.testing.assert_allclose([st.mean, st.lo, st.hi], [mean, lo, hi], rtol=1e-12)
            assert st.n == 5 and st.env_steps == last
        best = max(v.mean() for v in finals.values())
        assert s.best[task] == pytest.approx(best)
        for method in METHODS:
            mine = [r for r in rows if r.task == task and r.method == method]
            assert s.stats[task, method].to_threshold == _brute_force_time_to(mine, 0.9 * best)
    for method in METHODS:
        expected = [[finals_of(rows, task, method, seed) / 1000 for task in TASKS] for seed in range(1, 6)]
        np.testing.assert_allclose(s.scores[method], expected, rtol=1e-12)


def finals_of(rows: list[report.ResultRow], task: str, method: str, seed: int) -> float:
    """The return of ``seed``'s last evaluation."""
    mine = [r for r in rows if (r.task, r.method, r.seed) == (task, method, seed)]
    return max(mine, key=lambda r: r.env_steps).eval_return


def _rows_from_scores(scores: dict[str, np.ndarray], rng: np.random.Generator) -> list[report.ResultRow]:
    """results.csv rows, shuffled, whose final returns are 1000 x ``scores[method]`` (seeds x TASKS) after three
    earlier evaluations; each method also has a seed that ends on the first task only."""
    rows = []
    for method, matrix in scores.items():
        for i, seed in enumerate([*range(1, len(matrix) + 1), 99]):
            for t, task in enumerate(TASKS if seed != 99 else TASKS[:1]):
                final = 1000 * matrix[i, t] if seed != 99 else 1000.0
                returns = [*rng.uniform(0, 1000, 3), final]
                rows += [report.ResultRow(task, method, seed, (k + 1) * 2048, k + 1.0, float(r))
                         for k, r in enumerate(returns)]  # fmt: skip
    rng.shuffle(rows)
    return rows


def _aggregates(x: np.ndarray) -> np.ndarray:
    return np.array([metrics.aggregate_iqm(x), metrics.aggregate_median(x), metrics.aggregate_mean(x),
                     metrics.aggregate_optimality_gap(x)])  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1])
def test_aggregates_and_improvement_equal_rliable_on_fixed_scores(seed):
    """On fixed synthetic scores (methods with different numbers of seeds, one seed missing tasks), the summary's
    aggregates and probabilities of improvement equal rliable's own functions called on the score matrices with
    the same bootstrap seed; the point estimates also equal their definitions written out."""
    rng = np.random.default_rng(200 + seed)
    shapes = {"reppo": (5, 2), "ppo": (1, 5), "ppo_small": (2, 3), "sac": (2, 2)}  # beta distributions of the scores
    runs = {"reppo": 5, "ppo": 4, "ppo_small": 3, "sac": 7}
    scores = {m: rng.beta(*shapes[m], (runs[m], len(TASKS))) for m in METHODS}
    scores["sac"][0] = scores["reppo"][0]  # ties count one half
    rows = _rows_from_scores(scores, rng)
    np.random.seed(7)
    after = np.random.random()
    np.random.seed(7)
    s = report.summarize(rows, [], tasks=TASKS, methods=METHODS, reference={}, reppo_preset="cpu", reps=REPS)
    assert np.random.random() == after  # the caller's global generator is left as it was
    for m in METHODS:
        np.testing.assert_allclose(s.scores[m], scores[m], rtol=1e-12)  # seed 99 (one task only) left out
        np.random.seed(BOOTSTRAP_SEED)
        point, ci = library.get_interval_estimates({m: scores[m]}, _aggregates, reps=REPS)
        got = np.array([s.aggregates[m][name] for name in report.AGGREGATES])  # (metric, (value, lo, hi))
        np.testing.assert_allclose(got[:, 0], point[m], rtol=1e-12)
        np.testing.assert_allclose(got[:, 1:], ci[m].T, rtol=1e-12)
        x = scores[m]
        cut = x.size // 4
        written_out = [np.sort(x, axis=None)[cut : x.size - cut].mean(), np.median(x.mean(axis=0)), x.mean(),
                       1 - np.minimum(x, 1).mean()]  # fmt: skip
        np.testing.assert_allclose(got[:, 0], written_out, rtol=1e-12)
        assert np.all(got[:, 1] <= got[:, 0]) and np.all(got[:, 0] <= got[:, 2]) and np.all(got[:, 1] < got[:, 2])
    for peer in ("ppo", "ppo_small", "sac"):
        x, y = scores["reppo"], scores[peer]
        np.random.seed(BOOTSTRAP_SEED)
        point, ci = library.get_interval_estimates({peer: [x, y]}, metrics.probability_of_improvement, reps=REPS)
        np.testing.assert_allclose(s.improvement[peer], [point[peer], *ci[peer][:, 0]], rtol=1e-12)
        pairs = [np.mean((x[:, t, None] > y[None, :, t]) + 0.5 * (x[:, t, None] == y[None, :, t]))
                 for t in range(len(TASKS))]  # fmt: skip
        assert s.improvement[peer][0] == pytest.approx(np.mean(pairs), rel=1e-12)


@pytest.mark.parametrize("repeat", range(3))
def test_intervals_narrow_as_seeds_are_added(repeat):
    """Every aggregate's interval and the probability of improvement's narrow as seeds are added: 4, 16 and 64
    seeds per task whose scores spread the same way (normal quantiles around a task level, in a fresh random
    order per task), so that only the number of seeds changes; 16 times the seeds give at most half the width
    (about a quarter). The task levels lie apart, so that the median is one task's mean."""
    rng = np.random.default_rng()
    level = np.array([0.25, 0.5, 0.75]) + rng.uniform(-0.05, 0.05, len(TASKS))
    widths = []
    for k in (4, 16, 64):
        spread = 0.15 * scipy.stats.norm.ppf((np.arange(k) + 0.5) / k)
        scores = {m: np.stack([level[t] + shift + rng.permutation(spread) for t in range(len(TASKS))], axis=1)
                  for m, shift in (("reppo", 0.1), ("sac", -0.1))}  # fmt: skip
        rows = _rows_from_scores(scores, rng)
        s = report.summarize(rows, [], tasks=TASKS, methods=("reppo", "sac"), reference={}, reppo_preset="cpu",
                             reps=REPS)  # fmt: skip
        assert s.scores["reppo"].shape == (k, len(TASKS))
        estimates = [s.aggregates["reppo"][name] for name in report.AGGREGATES] + [s.improvement["sac"]]
        widths.append([hi - lo for _, lo, hi in estimates])
    widths = np.array(widths)
    assert np.all(widths[1] < widths[0]) and np.all(widths[2] < widths[1]), widths
    assert np.all(widths[2] < 0.5 * widths[0]), widths


def test_score_matrix_and_normalisation_per_family():
    rows = [
        report.ResultRow(task, "reppo", seed, 4096, 1.0, 100.0 * seed + t)
        for seed in (1, 2, 3)
        for t, task in enumerate(("CartpoleBalance", "CheetahRun"))
        if (seed, t) != (2, 1)
    ]
    rows.append(report.ResultRow("CartpoleBalance", "reppo", 1, 2048, 0.5, 999.0))  # an earlier evaluation
    matrix = report.score_matrix(rows, ("CartpoleBalance", "CheetahRun"), "reppo")
    np.testing.assert_allclose(matrix, [[0.1, 0.101], [0.3, 0.301]])  # seed 2 has no CheetahRun result
    assert report.score_matrix(rows, ("CartpoleBalance", "CheetahRun"), "sac").shape == (0, 2)
    assert report.return_scale("PointMass") == 1000.0
    for task, family in (("G1JoystickFlatTerrain", "locomotion"), ("PandaPickCube", "manipulation"),
                         ("NoSuchTask", "no Playground family")):  # fmt: skip
        with pytest.raises(ValueError, match=rf"^task '{task}' \({family}\) has no normalised score; allowed: DM "
                                             r"Control tasks$"):  # fmt: skip
            report.score_matrix([dataclasses.replace(rows[0], task=task)], (task,), "reppo")


def test_time_to_threshold_not_reached_and_first_crossing():
    rng = np.random.default_rng(7)
    rows = [report.ResultRow("A", "reppo", s, k * 100, k + s * 0.1, float(v))
            for s in (1, 2) for k, v in enumerate(rng.uniform(0, 500, 10))]  # fmt: skip
    assert report.time_to_threshold(rows, 10_000.0) is None
    for threshold in rng.uniform(0, 500, 20):
        assert report.time_to_threshold(rows, threshold) == _brute_force_time_to(rows, threshold)


def test_summary_markdown_targets_reference_and_aggregates():
    rows = [report.ResultRow("CartpoleBalance", m, s, 1000, 1.0, v)
            for m, v in (("reppo", 950.0), ("ppo", 400.0), ("sac", 960.0)) for s in (1, 2)]  # fmt: skip
    reference = {("CartpoleBalance", "reppo"): report.Reference("reppo_small_data", 999.78, 10)}
    s = report.summarize(rows, [], tasks=("CartpoleBalance",), methods=METHODS, reference=reference,
                         reppo_preset="cpu", reps=REPS)  # fmt: skip
    text = report.summary_markdown(s, command="reppo bench --suite cpu")
    assert "999.8 (reppo_small_data, 10 runs)" in text
    assert "CartpoleBalance: REPPO final return >= Brax PPO's: **met (950.0 vs 400.0)**" in text
    assert "CartpoleBalance: REPPO final return >= Brax SAC's: **MISSED (950.0 vs 960.0)**" in text
    assert "REPPO reaches 90% of the published REPPO final return: **met (950.0 vs 899.8)**" in text
    assert "not measured by this suite (REPPO ran the cpu preset)" in text
    same = "0.950 [0.950, 0.950]"  # both seeds score 0.95: every resample gives the same aggregate
    assert f"| REPPO | 2 x 1 | {same} | {same} | {same} | 0.050 [0.050, 0.050] |" in text
    assert "| Brax PPO | 1.000 [1.000, 1.000] |" in text and "| Brax SAC | 0.000 [0.000, 0.000] |" in text


def test_reference_file_is_read_as_published_means():
    path = report.reference_path()
    if path is None:
        pytest.skip("../shared/reference/dmc_final_returns.csv is not beside this checkout")
    reference = report.load_reference(path)
    assert reference["CartpoleBalance", "reppo"] == report.Reference("reppo_small_data", 999.78, 10)
    assert all(method == "reppo" or ref.source != "ppo" for (_, method), ref in reference.items())


# --------------------------------------------------------------------------------------------------------------
# schedules and the compile-free clock


def test_brax_schedules_stay_within_the_budget():
    ppo = published_config("ppo", "CartpoleBalance")
    unit = 1024 * 32 * 30 * 10  # batch x minibatches x unroll x resets per evaluation
    s = ppo_schedule(ppo, 50_000_000, 10)
    assert s.eval_steps == tuple(unit * e for e in range(6)) and s.num_timesteps == 5 * unit and s.num_evals == 6
    assert not s.stops_early and not s.note
    s = ppo_schedule(ppo, 500_000, 10)
    assert s.eval_steps == (0,) and s.stops_early and "no update within the budget" in s.note
    assert "no evaluated update" in ppo_schedule(ppo, 2_000_000, 10).note
    sac = published_config("sac", "CartpoleBalance")
    for budget, points in ((9_472, 2), (40_960, 10), (333_333, 10), (10_000_000, 10)):
        s = sac_schedule(sac, budget, points)
        gaps = np.diff(s.eval_steps[1:])
        assert s.eval_steps[0] == 0 and s.eval_steps[-1] == s.num_timesteps <= budget
        assert len(s.eval_steps) == points + 1 == s.num_evals and np.all(gaps == gaps[0]) and gaps[0] % 128 == 0
        assert budget - s.num_timesteps < 128 * points  # the largest schedule Brax's arithmetic allows


def test_ppo_small_has_the_batch_geometry_of_reppo_in_the_cpu_suite():
    """Brax PPO ``ppo_small`` collects REPPO's cpu-suite batch per update (128 envs x 16 steps), in as many
    minibatches of as many env steps, as many passes, and keeps every other published value; in every cpu budget it
    updates at least 80 times and is evaluated 10 times."""
    reppo = preset_config("cpu", **CPU_REPPO_OVERRIDES)
    for task in SUITES["cpu"].task_names:
        published, small = published_config("ppo", task), peer_config("ppo_small", task)
        trajectories = small["batch_size"] * small["num_minibatches"]
        assert trajectories % small["num_envs"] == 0  # Brax's requirement
        per_update = trajectories * small["unroll_length"] * small["action_repeat"]
        assert (small["num_envs"], small["unroll_length"]) == (reppo.num_envs, reppo.num_steps)
        assert per_update == reppo.batch_size and small["num_minibatches"] == reppo.num_minibatches
        assert per_update // small["num_minibatches"] == reppo.minibatch_size
        assert small["num_updates_per_batch"] == reppo.num_epochs and small["num_resets_per_eval"] == 0
        changed = {k for k in published if published[k] != small[k]}
        assert changed == {"num_envs", "unroll_length", "batch_size", "num_minibatches", "num_updates_per_batch",
                           "num_resets_per_eval"}, task  # fmt: skip
        s = ppo_schedule(small, SUITES["cpu"].budget(task), 10)
        assert s.num_timesteps // per_update >= 80 and len(s.eval_steps) == 11 and not s.note, task
        assert s.num_timesteps <= SUITES["cpu"].budget(task) and s.num_timesteps % per_update == 0


def test_equal_time_takes_each_seed_at_its_last_evaluation_within_the_shortest_run():
    """Against a brute force on random curves: T is the shortest mean final time among methods with a final time
    above 0; a method's value is the mean over its seeds of the return at the last evaluation at or before T."""
    rng = np.random.default_rng()
    rows = _random_rows(rng, tasks=("A",), seeds=3, points=6)
    rows += [report.ResultRow("A", "ppo", s, 0, 0.0, 7.0) for s in (1, 2)]  # only an initial evaluation
    rows = [r for r in rows if r.method != "ppo" or r.env_steps == 0]
    stats = {}
    for m in METHODS:
        mine = [r for r in rows if r.method == m]
        finals = report.final_rows(mine)
        stats[m] = report.MethodStats(n=len(finals), wall_s=float(np.mean([r.wall_s for r in finals])))
    seconds, returns = report.equal_time(rows, stats)
    assert seconds == min(stats[m].wall_s for m in METHODS if m != "ppo")
    for m in METHODS:
        per_seed = []
        for seed in sorted({r.seed for r in rows if r.method == m}):
            within = [r for r in rows if r.method == m and r.seed == seed and r.wall_s <= seconds]
            if within:
                per_seed.append(max(within, key=lambda r: r.env_steps).eval_return)
        assert returns[m] == pytest.approx(np.mean(per_seed)), m
    assert returns["ppo"] == 7.0


def test_union_length_matches_a_fine_grid():
    rng = np.random.default_rng(3)
    grid = np.linspace(0, 10, 200_001)
    for _ in range(20):
        spans = [tuple(sorted(rng.uniform(-1, 11, 2))) for _ in range(rng.integers(0, 8))]
        lo, hi = sorted(rng.uniform(0, 10, 2))
        inside = (grid >= lo) & (grid <= hi)
        covered = np.zeros_like(grid, bool)
        for a, b in spans:
            covered |= (grid >= a) & (grid <= b)
        expected = (covered & inside).sum() * (grid[1] - grid[0])
        assert union_length(spans, lo, hi) == pytest.approx(expected, abs=2e-4)


# --------------------------------------------------------------------------------------------------------------
# real runs


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _check_results(out: Path, budgets: dict[str, int]) -> list[dict[str, str]]:
    columns, rows = _read_csv(out / report.RESULTS_FILE)
    assert columns == ["task", "method", "seed", "env_steps", "wall_s", "eval_return"]
    curves: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for row in rows:
        curves.setdefault((row["task"], row["method"], row["seed"]), []).append(row)
    for (task, _, _), curve in curves.items():
        steps = [int(r["env_steps"]) for r in curve]
        walls = [float(r["wall_s"]) for r in curve]
        assert steps == sorted(steps) and len(set(steps)) == len(steps) and steps[-1] <= budgets[task]
        assert walls == sorted(walls) and walls[0] >= 0
        assert all(np.isfinite(float(r["eval_return"])) for r in curve)
    return rows


@pytest.mark.slow  # real runs of a minute or more: the slow command (CI runs both)
def test_real_sac_run_and_a_crash_that_the_bench_survives(tmp_path):
    """One Brax SAC run (tiny budget) after a run that crashes (an unknown task): the crash is recorded with its
    reason, the SAC run's evaluations follow its schedule, and the summary and plots are written."""
    budget = 9_472  # Brax SAC's 8,192-step replay prefill, then 10 actor steps of 128 envs
    plan = BenchPlan(SUITES["cpu"], ("NoSuchTask", "CartpoleBalance"), ("sac",), 1,
                     {"NoSuchTask": budget, "CartpoleBalance": budget}, 2, tmp_path)  # fmt: skip
    records = run_bench(plan, echo=lambda line: None)
    assert [r.status for r in records] == ["failed", "ok"]
    assert "exit code 1" in records[0].note and "NoSuchTask" in records[0].note
    rows = _check_results(tmp_path, plan.budgets)
    steps = [int(r["env_steps"]) for r in rows]
    assert steps == list(sac_schedule(published_config("sac", "CartpoleBalance"), budget, 2).eval_steps)
    assert float(rows[0]["wall_s"]) == 0.0  # the clock starts at the initial evaluation
    _, runs = _read_csv(tmp_path / "runs.csv")
    assert [r["status"] for r in runs] == ["failed", "ok"]
    ok = runs[1]
    assert float(ok["compile_s"]) > 1 and float(ok["peak_rss_mb"]) > 100
    assert float(ok["process_s"]) > float(ok["wall_s"]) + float(ok["compile_s"])
    records_file = tmp_path / "runs" / "CartpoleBalance__sac__1" / "records.jsonl"
    done = json.loads(records_file.read_text().splitlines()[-1])
    assert done["settings"]["batch_size"] == 512 and done["settings"]["dropped"] == ["num_resets_per_eval"]
    summary = (tmp_path / report.SUMMARY_FILE).read_text()
    assert "| NoSuchTask | failed |" in summary and "| CartpoleBalance | " in summary
    for name in ("curves_env_steps.png", "curves_wall_s.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --resume: the finished SAC run is taken over as it was, the failed run runs (and fails) again.
    before = records_file.read_text()
    results_before = (tmp_path / report.RESULTS_FILE).read_text()
    stale = tmp_path / "runs" / "NoSuchTask__sac__1" / "reppo" / "config.yaml"  # e.g. a REPPO run folder
    stale.parent.mkdir()
    stale.write_text("stale")
    lines = []
    again = run_bench(dataclasses.replace(plan, resume=True), echo=lines.append)
    assert [r.status for r in again] == ["failed", "ok"]
    assert records_file.read_text() == before
    assert again[1].process_s == pytest.approx(records[1].process_s, abs=0.05) and again[1].rows == records[1].rows
    assert sum("taken over" in line for line in lines) == 1 and not stale.parent.exists()
    assert _read_csv(tmp_path / "runs.csv")[1][1] == runs[1]  # the SAC row as it was; the failed run ran again
    assert (tmp_path / report.RESULTS_FILE).read_text() == results_before  # the last run, taken over, included


def _finished_run(folder: Path, spec: RunSpec) -> dict[str, str]:
    """A run folder as a finished worker leaves it, and its runs.csv row."""
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(json.dumps(dataclasses.asdict(spec)))
    evals = [{"kind": "eval", "seed": s, "env_steps": e, "wall_s": e / 1e3, "eval_return": float(s * e % 997)}
             for s in spec.seeds for e in (0, spec.budget)]  # fmt: skip
    done = {"kind": "done", "compile_s": 3.5, "device_peak_bytes": None, "note": ""}
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*evals, done]))
    return {"task": spec.task, "method": spec.method, "seeds": spec.seed_label, "status": "ok",
            "budget": str(spec.budget), "env_steps": str(spec.budget), "wall_s": "1.0", "compile_s": "3.5",
            "process_s": "12.5", "peak_rss_mb": "900.0", "device_peak_mb": "", "note": ""}  # fmt: skip


@pytest.mark.parametrize("method", ["reppo", "sac"])
def test_resume_takes_over_only_runs_finished_with_the_same_settings(method, tmp_path):
    rng = np.random.default_rng()
    budget = int(rng.integers(10_000, 100_000))
    seeds = (1, 2, 3) if method == "reppo" else (int(rng.integers(1, 9)),)
    spec = RunSpec("ReacherEasy", method, seeds, budget, str(tmp_path / "run"), reppo_overrides={"num_envs": 128})
    row = _finished_run(tmp_path / "run", spec)
    record = reuse_run(spec, row)
    assert record is not None and record.status == "ok" and record.process_s == 12.5 and record.compile_s == 3.5
    assert [(r.seed, r.env_steps) for r in record.rows] == [(s, e) for s in seeds for e in (0, budget)]
    assert reuse_run(dataclasses.replace(spec, folder=str(tmp_path / "run" / ".." / "run")), row) is not None
    # Another budget or evaluation count always runs again; other REPPO settings only for REPPO.
    assert reuse_run(dataclasses.replace(spec, budget=budget + 1), row) is None
    assert reuse_run(dataclasses.replace(spec, points=3), row) is None
    other = reuse_run(dataclasses.replace(spec, reppo_overrides={"num_envs": 64}), row)
    assert (other is None) == (method == "reppo")
    assert reuse_run(spec, {**row, "status": "failed"}) is None and reuse_run(spec, None) is None
    lines = (tmp_path / "run" / "records.jsonl").read_text().splitlines()
    (tmp_path / "run" / "records.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # killed before its end
    assert reuse_run(spec, row) is None


def test_resume_needs_out():
    with pytest.raises(BenchError, match="--resume needs --out"):
        plan_bench(resume=True)


def _stored_bench(folder: Path, rng: np.random.Generator, tasks=("CartpoleBalance", "CheetahRun")) -> list:
    """A bench folder as ``reppo bench`` leaves it: results.csv of REPPO and Brax SAC (2 seeds) on ``tasks``,
    runs.csv and a summary.md with its command; returns the results' rows."""
    folder.mkdir()
    rows = [report.ResultRow(task, method, seed, k * 20_480, k * 10.0, float(rng.uniform(0, 1000)))
            for task in tasks for method in ("reppo", "sac") for seed in (1, 2) for k in (1, 2, 3)]  # fmt: skip
    report.write_results(folder / report.RESULTS_FILE, rows)
    with open(folder / "runs.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["task", "method", "seeds", "status", "budget", "env_steps", "wall_s", "compile_s",
                         "process_s", "peak_rss_mb", "device_peak_mb", "note"])  # fmt: skip
        for task in tasks:
            writer.writerow([task, "reppo", "1-2", "ok", 61440, 61440, 30.0, 12.5, 50.0, 2048.0, "", ""])
            for seed in (1, 2):
                writer.writerow([task, "sac", seed, "ok", 61440, 61440, 30.0, 12.5, 50.0, 2048.0, "", "a note"])
    (folder / report.SUMMARY_FILE).write_text("# Benchmark summary\n\nCommand: `reppo bench --seeds 2 --out x`\n")
    return [report.ResultRow(r.task, r.method, r.seed, r.env_steps, r.wall_s, round(r.eval_return, 4)) for r in rows]


def test_report_only_recomputes_the_summary_and_plots_from_results(tmp_path, capsys):
    """``reppo bench --report-only --out FOLDER``: tasks and methods from results.csv, run facts from runs.csv, the
    original command kept; the aggregates are those of :func:`report.summarize` on the stored rows."""
    from matplotlib.image import imread

    out = tmp_path / "bench"
    rows = _stored_bench(out, np.random.default_rng())
    assert main(["bench", "--report-only", "--out", str(out), "--bootstrap-reps", str(REPS)]) == 0
    assert capsys.readouterr().out.startswith(f"reppo: wrote {out / report.SUMMARY_FILE}")
    text = (out / report.SUMMARY_FILE).read_text()
    assert "Command: `reppo bench --seeds 2 --out x`" in text
    recomputed = f"reppo bench --report-only --suite cpu --bootstrap-reps {REPS} --out {out}"
    assert f"Summary recomputed from its results.csv and runs.csv: `{recomputed}`" in text
    assert "| CheetahRun | Brax SAC | 61,440 | 30 | 25 | 2.00 | - | 2 ok |" in text and "SAC seed 2: a note" in text
    assert "Brax PPO" not in text  # not in results.csv
    scores = {m: report.score_matrix(rows, ("CartpoleBalance", "CheetahRun"), m) for m in ("reppo", "sac")}
    for method, name in (("reppo", "REPPO"), ("sac", "Brax SAC")):
        cells = [
            f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
            for v, lo, hi in report.aggregate_estimates(scores[method], reps=REPS).values()
        ]
        assert f"| {name} | 2 x 2 | {' | '.join(cells)} |" in text
    value, lo, hi = report.improvement_estimate(scores["reppo"], scores["sac"], reps=REPS)
    assert f"| Brax SAC | {value:.3f} [{lo:.3f}, {hi:.3f}] |" in text
    names = [*report.CURVE_FILES, report.PROFILE_FILE, report.AGGREGATES_FILE]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(names)
    for name in names:
        image = imread(out / name)
        assert image.shape[0] > 150 and image.shape[1] > 500 and image[..., :3].std() > 0.05, name


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "--report-only needs --out, the folder of a bench"),
        (["--out", "{empty}"], "--out '{empty}' has no results.csv; allowed: the folder of a bench"),
        (["--out", "{bench}", "--seeds", "2"], "--seeds does not apply to --report-only; allowed with it: --out, "),
        (["--out", "{bench}", "--resume"], "--resume does not apply to --report-only"),
        (["--out", "{bench}", "--tasks", "ReacherEasy"], "--tasks 'ReacherEasy' has no results in "),
        (["--out", "{bench}", "--methods", "ppo"], "--methods 'ppo' has no results in "),
        (["--out", "{bench}", "--bootstrap-reps", "-5"], "--bootstrap-reps -5 must be a positive integer"),
        (["--out", "{stray}"], "results.csv task 'HopperHop' is not a task of the cpu suite; allowed: CartpoleBalance"),
    ],
)
def test_report_only_bad_input_is_one_line_and_exit_2(args, needle, tmp_path, capsys):
    folders = {"bench": tmp_path / "bench", "empty": tmp_path / "empty", "stray": tmp_path / "stray"}
    _stored_bench(folders["bench"], np.random.default_rng(0))
    _stored_bench(folders["stray"], np.random.default_rng(0), tasks=("CartpoleBalance", "HopperHop"))
    folders["empty"].mkdir()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(["bench", "--report-only", *[a.format(**folders) for a in args]]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    needle = needle.format(**folders)
    assert len(lines) == 1 and lines[0].startswith("reppo: error: ") and needle in lines[0], lines
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written


@pytest.mark.slow
def test_real_runs_of_all_methods_with_two_seeds(tmp_path):
    """``reppo bench`` end to end: REPPO (two seeds in one process), Brax PPO, Brax PPO small and Brax SAC (one
    process per seed). Published PPO makes no update in the budget; PPO small updates every 2,048 env steps."""
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "reppo.cli", "bench", "--tasks", "CartpoleBalance", "--seeds", "2", "--budget",
         "16384", "--points", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = plan_bench(tasks="CartpoleBalance", seeds=2, budget=16_384, points=2, out=tmp_path / "unused")
    rows = _check_results(out, plan.budgets)
    assert {(r["method"], r["seed"]) for r in rows} == {(m, s) for m in METHODS for s in ("1", "2")}
    reppo = [int(r["env_steps"]) for r in rows if r["method"] == "reppo" and r["seed"] == "1"]
    assert reppo == [8_192, 16_384]
    assert [int(r["env_steps"]) for r in rows if r["method"] == "ppo"] == [0, 0]  # no PPO update in 16k steps
    small = [int(r["env_steps"]) for r in rows if r["method"] == "ppo_small" and r["seed"] == "1"]
    assert small == [0, 8_192, 16_384]  # 4 updates of 2,048 env steps between evaluations
    _, runs = _read_csv(out / "runs.csv")
    assert [(r["method"], r["seeds"], r["status"]) for r in runs] == [
        ("reppo", "1-2", "ok"), ("ppo", "1", "ok"), ("ppo", "2", "ok"), ("ppo_small", "1", "ok"),
        ("ppo_small", "2", "ok"), ("sac", "1", "ok"), ("sac", "2", "ok"),
    ]  # fmt: skip
    summary = (out / report.SUMMARY_FILE).read_text()
    assert summary in proc.stdout and "## Targets" in summary and "IQM" in summary


def _memory_benchmark():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "memory.py"
    spec = importlib.util.spec_from_file_location("memory_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_memory_benchmark_budgets_match_its_documented_runs():
    """``benchmarks/memory.py`` (not otherwise run by the suite; a changed ``min_budget`` signature once broke it):
    REPPO runs whole paper-small iterations of 1024 x 32 env steps, Brax SAC its 8,192-step prefill of 128 envs
    plus its actor steps (docs/BENCHMARKS.md: 65,536 and 9,472 env steps at the defaults)."""
    module = _memory_benchmark()
    rng = np.random.default_rng()
    iterations, actor_steps = (int(x) for x in rng.integers(1, 50, size=2))
    budgets = module.env_step_budgets("CartpoleBalance", iterations, actor_steps)
    assert budgets == {"reppo": iterations * 1024 * 32, "sac": 8192 + actor_steps * 128}
    assert module.env_step_budgets("CartpoleBalance", 2, 10) == {"reppo": 65_536, "sac": 9_472}


def test_memory_breakdown_accounts_for_the_state_and_the_batch():
    """``memory.py --breakdown`` against byte counts made without XLA's analysis: ``init`` writes the state, whose
    bytes are those of numpy arrays of the train state's shapes and dtypes, and which the parts add up to;
    ``targets`` writes the batch, whose bytes follow from its fields (float32 per row: obs and critic obs, action,
    pi_old's mean and std, reward, termination, return, and the critic-width aux target). XLA's outputs also hold
    a table of one 8-byte pointer per array."""
    from reppo.config import preset_config, resolve
    from reppo.envs import make_env
    from reppo.rollout import make_rollout

    module = _memory_benchmark()
    rng = np.random.default_rng()
    num_envs, num_steps = int(rng.choice([8, 16, 32])), int(rng.integers(2, 6))
    width = int(rng.choice([32, 64, 96]))
    overrides = dict(num_envs=num_envs, num_steps=num_steps, num_minibatches=2, critic_width=width)
    analysis, parts = module.xla_breakdown("CartpoleBalance", "cpu", ("init", "targets"), **overrides)

    config = resolve(preset_config("cpu", env="CartpoleBalance", **overrides))
    env = make_env("CartpoleBalance", num_envs)
    leaves = jax.tree.leaves(make_rollout(config, env).abstract_state(jax.random.PRNGKey(0)[None]))
    state_bytes = sum(np.zeros(x.shape, x.dtype).nbytes for x in leaves)
    state_parts = ["actor parameters + Adam", "critic parameters + Adam", "env state"]
    assert sum(parts[p] for p in state_parts + ["duals, statistics, key, counter"]) == state_bytes
    assert analysis["init"]["outputs"] == state_bytes + 8 * len(leaves)
    batch = num_envs * num_steps
    row = env.obs_size + env.critic_obs_size + 3 * env.action_size + 3 + width
    assert parts["batch (targets, pi_old, aux targets)"] == 4 * batch * row
    assert analysis["targets"]["outputs"] == 4 * batch * row + 8 * 9  # the 9 fields of a Minibatch
    assert parts["  of which aux targets phi(x', a')"] == 4 * batch * width
    assert analysis["init"]["arguments"] == 8  # the PRNG key
    assert analysis["targets"]["temporaries"] > 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "foo=1"], "--set 'foo' is not a field of reppo.config.Config"),
        (["--set", "value_chunk_size"], "--set 'value_chunk_size' must be KEY=NUMBER"),
        (["--set", "value_chunk_size=4k"], "--set 'value_chunk_size=4k': '4k' is not a number"),
        (["--set", "value_chunk_size=0"], "value_chunk_size=0 must be a positive integer"),
        (["--task", "CartpoleBalanc"], "unknown env 'CartpoleBalanc'"),
    ],
)
def test_memory_breakdown_bad_input_is_one_line(args, needle, capsys):
    """Bad ``--breakdown`` input exits 2 with one line naming the value, before anything compiles."""
    with pytest.raises(SystemExit) as exc:
        _memory_benchmark().main(["--breakdown", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert needle in err[-1] and err[-1].startswith("memory.py: error:")
