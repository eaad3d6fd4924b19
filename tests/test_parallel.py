"""One run over several devices and processes (``reppo.parallel``), on CPU: devices forced with
``XLA_FLAGS=--xla_force_host_platform_device_count``, processes joined through ``jax.distributed`` on localhost.

The same global batch and seed on 1 and on 2 devices give the same run up to float summation order; two processes
holding one device each give the run of one process holding both; only process 0 writes; every process resumes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from closeness import assert_same_run

from reppo import parallel

B = 16 * 8  # env steps per iteration of the config below
FLAGS = dict(
    env="CartpoleBalance", num_envs=16, num_steps=8, num_minibatches=2, critic_width=32, actor_width=32,
    actor_depth=2, eval_every=B * 2, eval_envs=4, progress=False,
)  # fmt: skip


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    return env


def _cli_flags(run_dir: Path, total_steps: int, devices: str) -> list[str]:
    flags = ["--run-dir", str(run_dir), "--total-steps", str(total_steps), "--devices", devices]
    for name, value in FLAGS.items():
        flag = "--" + name.replace("_", "-")
        flags += ["--no-" + flag[2:]] if value is False else [flag, str(value)]
    return flags


def _arrays(path: Path) -> list[np.ndarray]:
    """The arrays of an ``np.savez`` file, in the order they were saved."""
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def _checkpoint_state(run_dir: Path) -> tuple[int, dict[str, np.ndarray]]:
    """The latest checkpoint's full state, as its flat leaves (iteration, {leaf name: array})."""
    import orbax.checkpoint as ocp

    from reppo.checkpoint import Checkpointer

    ckpt = Checkpointer(run_dir, create=False)
    step = ckpt.latest()
    out = ckpt._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    ckpt.close()
    return step, {k: np.asarray(v) for k, v in out["state"].items()}


SHARDED = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from reppo import Config, train
    from reppo.config import resolve
    from reppo.envs import make_env
    from reppo.parallel import ENV_AXIS
    from reppo.rollout import make_rollout

    flags, out = json.loads(sys.argv[1]), sys.argv[2]
    assert jax.device_count() == 2
    report = {}
    for devices in (1, 2):
        result = train(Config(total_steps=int(sys.argv[3]), devices=devices, **flags), run_dir=f"{out}/d{devices}",
                       echo=lambda _: None)
        state = result.state
        obs, params = state.env_state.obs, jax.tree.leaves(state.learner.actor_params)[0]
        report[devices] = {
            "obs_devices": len(obs.sharding.device_set),
            "obs_spec": str(obs.sharding.spec),
            "obs_shard_rows": [s.data.shape[0] for s in obs.addressable_shards],
            "params_replicated": params.sharding.is_fully_replicated,
            "returns": [e["eval/episode_return"] for e in result.evaluations],
        }
        np.savez(f"{out}/d{devices}.npz", *[np.asarray(x) for x in jax.tree.leaves(state)])
    config = resolve(Config(**flags))  # the initial state both runs started from
    rollout = make_rollout(config, make_env(config.env, config.num_envs))
    start = rollout.start(jax.random.split(jax.random.PRNGKey(config.seed))[None, 0])
    np.savez(f"{out}/start.npz", *[np.asarray(x) for x in jax.tree.leaves(start)])
    print(json.dumps(report))
    """
)


@pytest.mark.slow  # two compilations in a 2-device process, about 2.5 minutes
def test_two_devices_give_the_one_device_run(tmp_path):
    """The same global batch and seed on 1 and 2 (forced CPU) devices: envs split in halves, parameters
    replicated, and after 4 iterations (two evaluations) the same state within float tolerance."""
    import json

    proc = subprocess.run(
        [sys.executable, "-c", SHARDED, json.dumps(FLAGS), str(tmp_path), str(B * 4)],
        env=_env(2), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    one, two = report["1"], report["2"]
    assert (one["obs_devices"], two["obs_devices"]) == (1, 2)
    assert two["obs_spec"] == f"P('{parallel.ENV_AXIS}',)" and two["obs_shard_rows"] == [8, 8]
    assert one["params_replicated"] and two["params_replicated"]
    # Whole 1000-step episodes of the deterministic policy amplify the parameters' rounding-level differences (6e-4
    # relative measured on an AMD EPYC); the state comparison below carries the precision.
    np.testing.assert_allclose(two["returns"], one["returns"], rtol=1e-2)
    a, b, start = (_arrays(tmp_path / f"{name}.npz") for name in ("d1", "d2", "start"))
    assert len(a) == len(b) == len(start) > 100
    # Parameters, Adam moments, duals, statistics, env state, keys: within float summation order, measured against
    # how far the run moved them (tests/closeness.py says why an elementwise tolerance is processor-dependent).
    assert_same_run(b, a, start)
    moved = sum(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert moved > 0  # the summation order did change: the sharded program really ran differently


def _start_state() -> dict[str, np.ndarray]:
    """The initial state of FLAGS' run (seed 1), flattened as the checkpoints store it."""
    import jax

    from reppo.checkpoint import _flatten
    from reppo.config import Config, resolve
    from reppo.envs import make_env
    from reppo.rollout import make_rollout

    config = resolve(Config(**FLAGS))
    rollout = make_rollout(config, make_env(config.env, config.num_envs))
    state = rollout.start(jax.random.split(jax.random.PRNGKey(config.seed))[None, 0])
    return {k: np.asarray(v) for k, v in _flatten(state).items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_processes(run_dir: Path, total_steps: int, resume: bool, cwd: Path) -> None:
    port = _free_port()
    procs = []
    for rank in (0, 1):
        args = (
            ["--resume", str(run_dir), "--total-steps", str(total_steps)]
            if resume
            else _cli_flags(run_dir, total_steps, "all")
        )
        launch = ["--coordinator-address", f"localhost:{port}", "--num-processes", "2", "--process-id", str(rank)]
        folder = cwd / f"rank{rank}"
        folder.mkdir(exist_ok=True)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "reppo.cli", "train", *args, *launch],
                env=_env(1),
                cwd=folder,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "reppo: done" in outs[0][0] and "reppo:" not in outs[1][0]  # only process 0 prints


@pytest.mark.slow
def test_two_processes_train_and_resume_one_run(tmp_path):
    """Two processes (one CPU device each, Gloo collectives over localhost) train 2 iterations of one run, then
    both resume it from process 0's checkpoint to 4 iterations: the state equals, up to summation order, that of one
    process holding two devices; only process 0 wrote files."""
    run = tmp_path / "run"
    _two_processes(run, B * 2, resume=False, cwd=tmp_path)
    assert _checkpoint_state(run)[0] == 2
    _two_processes(run, B * 4, resume=True, cwd=tmp_path)

    reference = tmp_path / "reference"
    proc = subprocess.run(
        [sys.executable, "-m", "reppo.cli", "train", *_cli_flags(reference, B * 4, "2")],
        env=_env(2), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    step, got = _checkpoint_state(run)
    ref_step, want = _checkpoint_state(reference)
    assert step == ref_step == 4 and got.keys() == want.keys()
    # The same sharded program on the same machine, its collectives over Gloo instead of in one process: equal up
    # to summation order (bit for bit on the machines measured), checked as tests/closeness.py says.
    assert_same_run(got, want, _start_state())

    from reppo.logging import read_metrics

    rows = [(r["iteration"], r["eval/episode_return"]) for r in read_metrics(run / "metrics.csv")]
    ref_rows = [(r["iteration"], r["eval/episode_return"]) for r in read_metrics(reference / "metrics.csv")]
    assert rows == ref_rows  # one row per evaluation: process 1 logged nothing
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # one per process 0 start (train, then resume)
    assert not any((tmp_path / "rank1").iterdir()) and not any((tmp_path / "rank0").iterdir())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--devices", "3"], "devices=3 but this run has 1 cpu device(s); allowed: 1..1"),
        (["--devices", "0"], "devices=0 must be a positive integer or 'all'"),
        (["--num-envs", "6", "--num-minibatches", "2", "--devices", "all"], None),
        (["--num-processes", "2"], "missing: coordinator_address, process_id"),
        (
            ["--coordinator-address", "localhost:1", "--num-processes", "2", "--process-id", "2"],
            "process_id=2 must be in 0..1 (num_processes=2)",
        ),
        (["--coordinator-address", "nohost", "--num-processes", "1", "--process-id", "0"], "must be host:port"),
    ],
)
def test_bad_device_and_process_settings_fail_with_one_line(args, needle, tmp_path):
    if needle is None:  # 6 envs over 4 forced devices
        needle = "num_envs * num_seeds = 6 must be divisible by the 4 devices"
        env = _env(4)
    else:
        env = _env(1)
    proc = subprocess.run(
        [sys.executable, "-m", "reppo.cli", "train", "--run-dir", str(tmp_path / "run"), "--env", "ToyAsymmetric",
         "--num-steps", "4", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr[-2000:]


def test_launch_settings_from_environment_variables():
    """All three REPPO_* variables or none; flags take precedence (checked without starting the runtime)."""
    assert parallel.initialize(environ={}) is False
    with pytest.raises(parallel.ParallelError, match="missing: num_processes, process_id"):
        parallel.initialize(environ={"REPPO_COORDINATOR_ADDRESS": "10.0.0.1:1234"})
    with pytest.raises(parallel.ParallelError, match="process_id='x' must be an integer"):
        parallel.initialize(
            environ={"REPPO_COORDINATOR_ADDRESS": "h:1", "REPPO_NUM_PROCESSES": "2", "REPPO_PROCESS_ID": "x"}
        )
    with pytest.raises(parallel.ParallelError, match="process_id=5 must be in 0..1"):
        parallel.initialize(process_id=5, environ={"REPPO_COORDINATOR_ADDRESS": "h:1", "REPPO_NUM_PROCESSES": "2"})
