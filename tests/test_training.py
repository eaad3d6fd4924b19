"""Run lifecycle on the real CartpoleBalance: checkpoints, exact resume (Python API, Ctrl-C, kill -9), extension,
many seeds, the loaded policy, and the CLI commands that read a run folder (eval, export, plot, video)."""

from __future__ import annotations

import csv
import dataclasses
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from reppo import Config, load, resume, train
from reppo import training as training_module
from reppo.algo import distributions
from reppo.checkpoint import Checkpointer
from reppo.training import on_schedule

B = 16 * 8  # env steps per iteration of the small config
SMALL = dict(
    env="CartpoleBalance", num_envs=16, num_steps=8, num_minibatches=2, critic_width=32, actor_width=32,
    actor_depth=2, eval_every=B * 4, eval_envs=4, progress=False, checkpoint_every=3,
)  # fmt: skip
TIMING = {"wall_s", "perf/sps"}


def _config(iterations: int, **overrides) -> Config:
    return Config(total_steps=B * iterations, **{**SMALL, **overrides})


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _assert_same_state(a, b) -> None:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


_PROCESSES: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_orphans():
    """Kill any CLI process a failing test left behind."""
    yield
    while _PROCESSES:
        proc = _PROCESSES.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _reppo(*args: str, **kwargs) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reppo.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )
    _PROCESSES.append(proc)
    return proc


def _latest_step(run_dir: Path) -> int:
    """Newest complete checkpoint, read from the folder names alone (a writer may be deleting old ones)."""
    folder = run_dir / "checkpoints"
    steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(steps, default=0)


def _cli_flags(config: Config, run_dir: Path) -> list[str]:
    flags = ["--run-dir", str(run_dir)]
    for name in (*SMALL, "total_steps", "num_seeds"):
        value = getattr(config, name)
        flag = "--" + name.replace("_", "-")
        flags += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, str(value)]
    return flags


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of 14 iterations (evaluations after 4, 8, 12 and the final one after 14)."""
    config = _config(14)
    return train(config, run_dir=tmp_path_factory.mktemp("ref") / "run")


def test_stopped_and_resumed_run_is_bitwise_identical(reference, tmp_path):
    run = tmp_path / "run"
    short = train(_config(5), run_dir=run)  # final off-schedule evaluation after iteration 5
    assert [e["iteration"] for e in short.evaluations] == [4, 5]
    assert Checkpointer(run).steps() == [3, 5]
    resumed = resume(run, total_steps=B * 14)
    _assert_same_state(resumed.state, reference.state)
    assert _rows(run) == _rows(reference.run_dir)  # the extended run's log is the uninterrupted run's log
    assert [int(r["iteration"]) for r in _rows(run)] == [4, 8, 12, 14]
    # eval_s: the part of wall_s spent evaluating, growing with each evaluation and carried on by the checkpoint
    for result in (short, resumed):
        evals = result.evaluations
        assert all(0 < e["eval_s"] < e["wall_s"] for e in evals)
        assert all(a["eval_s"] < b["eval_s"] for a, b in zip(evals, evals[1:], strict=False))
    assert resumed.evaluations[0]["eval_s"] > short.evaluations[-1]["eval_s"]
    # a complete run resumed with the same budget does nothing
    again = resume(run)
    assert again.evaluations == [] and not again.interrupted


def test_trajectory_does_not_depend_on_total_steps(reference, tmp_path):
    prefix = train(_config(8), run_dir=tmp_path / "run")
    ref_rows, rows = _rows(reference.run_dir), _rows(prefix.run_dir)
    assert rows == ref_rows[: len(rows)]  # evaluations after 4 and 8 are scheduled in both runs
    for seed_rows in (rows,):
        assert all(on_schedule(int(r["iteration"]), prefix.config) for r in seed_rows)


def test_decayed_learning_rate_resumes_exactly_and_freezes_the_networks_at_zero(tmp_path):
    """lr_decay_steps of 3 iterations: a run stopped after 2 and resumed to 5 is the uninterrupted 5-iteration run
    (the schedule's step count is in the checkpoint), and from iteration 3 on, with both rates at 0, the actor and
    critic stay as they were while the duals and the observation statistics still move."""
    decay = dict(lr_decay_steps=B * 3, eval_every=B * 100)
    said: dict[str, list[str]] = {"whole": [], "stopped": [], "resumed": []}
    whole = train(_config(5, **decay), run_dir=tmp_path / "whole", echo=said["whole"].append)
    stopped = train(_config(2, **decay), run_dir=tmp_path / "resumed", echo=said["stopped"].append)
    assert Checkpointer(stopped.run_dir).latest() == 2
    resumed = resume(stopped.run_dir, total_steps=B * 5, echo=said["resumed"].append)
    _assert_same_state(resumed.state, whole.state)
    # The two iterations after the decay are said to leave the networks unchanged; a run within the decay is not.
    frozen = f"learning rates reach 0 at {B * 3:,} env steps (lr_decay_steps={B * 3}), so the last {B * 2:,} env steps"
    notes = {name: [line for line in lines if "learning rates reach 0" in line] for name, lines in said.items()}
    assert notes["stopped"] == [] and len(notes["whole"]) == len(notes["resumed"]) == 1
    assert frozen in notes["whole"][0] and f"set --lr-decay-steps {B * 5}" in notes["whole"][0]
    assert frozen in notes["resumed"][0] and "cannot change on resume" in notes["resumed"][0]
    at_zero = Checkpointer(whole.run_dir, create=False).restore(whole.state, 3)[0].learner  # checkpoint_every=3
    final = whole.state.learner
    _assert_same_state((at_zero.actor_params, at_zero.critic_params), (final.actor_params, final.critic_params))
    assert not np.array_equal(np.asarray(at_zero.log_duals), np.asarray(final.log_duals))
    assert not np.array_equal(np.asarray(at_zero.obs_stats.mean), np.asarray(final.obs_stats.mean))


def test_loaded_policy_is_the_trained_actor(reference):
    policy = load(reference.run_dir)
    state = jax.tree.map(lambda x: x[0], reference.state.learner)  # the run's one seed
    obs = np.random.default_rng().normal(size=(7, policy.obs_size)).astype(np.float32) * 3
    scale = np.sqrt(np.maximum(np.asarray(state.obs_stats.var), 1e-4))  # the floor and clip of spec section 6 [ours]
    normalized = np.clip((obs - np.asarray(state.obs_stats.mean)) / scale, -10.0, 10.0)
    actor = policy.actor
    mean, std = actor.apply(state.actor_params, normalized)
    np.testing.assert_allclose(policy(obs), np.clip(np.tanh(mean), -1 + 1e-5, 1 - 1e-5), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(policy(obs[0]), policy(obs)[0], rtol=1e-6, atol=1e-7)  # single observation
    key = jax.random.PRNGKey(int(np.random.default_rng().integers(1 << 30)))
    expected, _, _ = distributions.sample(key, mean, std)
    np.testing.assert_allclose(policy(obs, deterministic=False, key=key), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        policy(obs, deterministic=False)
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 5\)"):
        policy(np.zeros((2, 3)))


@pytest.mark.slow  # about 1-2 minutes: the default suite stays under 15 minutes
def test_ctrl_c_checkpoints_and_kill_9_loses_only_the_unsaved_work(reference, tmp_path):
    run = tmp_path / "run"
    # A long budget so the process is surely mid-run when interrupted; the trajectory does not depend on it.
    proc = _reppo("train", *_cli_flags(_config(100_000, checkpoint_every=1), run))
    deadline = time.monotonic() + 300
    while _latest_step(run) < 1:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint written" in out and "Traceback" not in err
    stopped_at = Checkpointer(run).latest()
    assert stopped_at >= 1

    # kill -9 a resumed process after it wrote a later checkpoint: the later checkpoints stay loadable
    proc = _reppo("train", "--resume", str(run))
    deadline = time.monotonic() + 300
    while _latest_step(run) < stopped_at + 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed_at = Checkpointer(run).latest()
    assert killed_at >= stopped_at + 2

    total = max(14, killed_at + 2)
    done = resume(run, total_steps=B * total)
    reference_run = reference if total == 14 else train(_config(total), run_dir=tmp_path / "ref")
    _assert_same_state(done.state, reference_run.state)
    assert _rows(run) == _rows(reference_run.run_dir)


def test_resume_refuses_changes_to_the_trajectory(reference, tmp_path):
    proc = _reppo("train", "--resume", str(reference.run_dir), "--num-envs", "8")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip() == (
        "reppo: error: --num-envs cannot change when resuming; allowed: --total-steps, --progress, "
        "--checkpoint-every, --track, --video, --devices"
    )
    with pytest.raises(ValueError, match="total_steps=128 is below the 1792 env steps"):
        resume(reference.run_dir, total_steps=B)
    proc = _reppo("train", "--resume", str(tmp_path / "nothing"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "has no config.yaml" in err


@pytest.mark.slow  # about 1-2 minutes: the default suite stays under 15 minutes
def test_many_seeds_in_one_program(tmp_path):
    config = _config(6, num_seeds=3, seed=5)
    run = tmp_path / "run"
    short = train(dataclasses.replace(config, total_steps=B * 2), run_dir=run)
    assert short.state.learner.actor_params["params"]["Dense_0"]["kernel"].shape[0] == 3
    result = resume(run, total_steps=config.total_steps)
    rows = _rows(run)
    assert sorted({int(r["seed"]) for r in rows}) == [5, 6, 7]
    # the short run's final evaluation (iteration 2, off the schedule) is replaced by the extended run's log
    assert [int(r["iteration"]) for r in rows] == [4, 4, 4, 6, 6, 6]
    for evaluation in result.evaluations:
        per_seed = [s["eval/episode_return"] for s in evaluation["per_seed"]]
        assert evaluation["eval/episode_return"] == pytest.approx(np.mean(per_seed))
    for s in (5, 6, 7):
        assert (run / f"seed_{s}").is_dir()  # per-seed TensorBoard folders

    # seeds are independent: distinct parameters, and seed s starts from the same networks as a single run of s
    kernels = np.asarray(result.state.learner.actor_params["params"]["Dense_0"]["kernel"])
    assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])
    from reppo.config import resolve
    from reppo.envs import make_env
    from reppo.rollout import make_rollout

    single = resolve(dataclasses.replace(config, num_seeds=1))
    one_seed = make_rollout(single, make_env(single.env, single.num_envs))
    multi = resolve(config)
    three_seeds = make_rollout(multi, make_env(multi.env, multi.num_envs * 3))
    keys = jax.numpy.stack([jax.random.split(jax.random.PRNGKey(s))[0] for s in (5, 6, 7)])
    batched = jax.jit(three_seeds.init)(keys)
    one = jax.jit(one_seed.init)(keys[1:2])
    # The same key through a vmapped and a plain program: elementwise arithmetic on the same random bits, equal
    # up to a rounding or two where the compiler contracts a multiply-add (a few float32 ulps).
    np.testing.assert_allclose(
        np.asarray(batched.learner.actor_params["params"]["Dense_0"]["kernel"][1]),
        np.asarray(one.learner.actor_params["params"]["Dense_0"]["kernel"][0]),
        rtol=4 * np.finfo(np.float32).eps,
        atol=1e-9,
    )

    # a policy per seed
    p0, p2 = load(run, seed_index=0), load(run, seed_index=2)
    obs = np.random.default_rng().normal(size=(4, p0.obs_size))
    assert not np.allclose(p0(obs), p2(obs))
    with pytest.raises(ValueError, match="seed_index=3 is out of range"):
        load(run, seed_index=3)


def test_cli_eval_export_plot_video(reference, tmp_path):
    run = str(reference.run_dir)
    proc = _reppo("eval", run, "--episodes", "3")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    table = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in out.splitlines()[2:4]}
    for mean, std, low, high in table.values():
        assert 0 <= low <= mean <= high <= 1000 and std >= 0
    assert set(table) == {"deterministic", "stochastic"}

    onnx_path = tmp_path / "policy.onnx"
    proc = _reppo("export", run, "--format", "onnx", "--out", str(onnx_path))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    import onnxruntime

    policy = load(run)
    obs = np.random.default_rng().normal(size=(16, policy.obs_size)).astype(np.float32)
    (action,) = onnxruntime.InferenceSession(str(onnx_path)).run(["action"], {"obs": obs})
    np.testing.assert_allclose(action, policy(obs), atol=2e-5)

    png = tmp_path / "curves.png"
    proc = _reppo("plot", run, "--out", str(png))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert png.stat().st_size > 10_000

    mp4 = tmp_path / "episode.mp4"
    proc = _reppo("video", run, "--out", str(mp4), "--max-steps", "12", "--width", "160", "--height", "120")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    import imageio.v3 as iio

    frames = iio.imread(mp4)
    assert frames.shape == (13, 120, 160, 3) and frames.std() > 10

    proc = _reppo("export", run, "--format", "tflite")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "tflite" in err


def test_wandb_offline_run_is_continued_on_resume(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train(_config(4, track=True), run_dir=run)
    run_id = (run / "wandb-run-id").read_text().strip()
    resume(run, total_steps=B * 8)
    offline = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(name.endswith(run_id) for name in offline)


@pytest.mark.slow
def test_video_recorded_at_each_evaluation(tmp_path):
    import imageio.v3 as iio

    run = tmp_path / "run"
    train(_config(8, video=True), run_dir=run)  # evaluations after iterations 4 and 8
    videos = sorted((run / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == [f"eval_{4 * B:010d}.mp4", f"eval_{8 * B:010d}.mp4"]
    frames = iio.imread(videos[-1])
    assert frames.shape == (1001, 240, 320, 3) and frames.std() > 10  # reset state + 1000 steps


def test_run_killed_before_its_first_checkpoint_restarts_from_the_beginning(reference, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text((reference.run_dir / "config.yaml").read_text())
    (run / "metrics.csv").write_text("env_steps,iteration,wall_s,seed,eval/episode_ret")  # a torn first write
    done = resume(run)
    _assert_same_state(done.state, reference.state)
    assert _rows(run) == _rows(reference.run_dir)


def test_evaluation_and_video_keys_are_never_reused(tmp_path, monkeypatch):
    """Every evaluation and every video (recorded at each evaluation) gets a key of its own: the video never replays
    the evaluation's randomness. Recorded through ``_Run``'s compiled evaluation and its ``record_video`` (rendering
    left out) on the small ToyAsymmetric."""
    keys: list[tuple[str, bytes]] = []
    compile_run = training_module._Run.compile

    def compile_and_record(self, state):
        state = compile_run(self, state)
        evaluate = self.evaluate

        def recorded(actor_params, obs_stats, key):
            keys.append(("eval", np.asarray(key).tobytes()))
            return evaluate(actor_params, obs_stats, key)

        self.evaluate = recorded
        return state

    monkeypatch.setattr(training_module._Run, "compile", compile_and_record)
    video = lambda self, learner, env_steps, key: keys.append(("video", np.asarray(key).tobytes()))
    monkeypatch.setattr(training_module._Run, "record_video", video)
    toy = dict(env="ToyAsymmetric", num_envs=8, num_steps=4, num_minibatches=2, num_epochs=1, critic_width=16,
               actor_width=16, num_value_samples=2, eval_envs=2, progress=False, checkpoint_every=0)  # fmt: skip
    seed = int(np.random.default_rng().integers(1 << 20))
    result = train(Config(total_steps=32 * 3, eval_every=32, video=True, seed=seed, **toy), run_dir=tmp_path / "run",
                   echo=lambda _: None)  # fmt: skip
    assert [kind for kind, _ in keys] == ["eval", "video"] * 3
    assert len({key for _, key in keys}) == 6, seed
    assert result.init_head_saturation is not None and 0.0 < result.init_head_saturation < 1.0
