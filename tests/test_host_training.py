"""Runs on a host-stepped family (Gymnasium MuJoCo InvertedPendulum-v5): training with several seeds, evaluation
on host envs, checkpoints and resume (envs reset, learner / keys / logs continued), the CLI commands that read
the run folder, and the NaN guard on an env object passed to ``train``."""

from __future__ import annotations

import csv
from pathlib import Path

import gymnasium
import jax
import numpy as np
import pytest

from reppo import Config, load, resume, train
from reppo.cli import main

ENV = "gymnasium:InvertedPendulum-v5"
B = 8 * 8
SMALL = dict(
    env=ENV, num_envs=8, num_steps=8, num_minibatches=2, num_epochs=2, critic_width=16, actor_width=16,
    actor_depth=2, eval_every=B * 2, eval_envs=2, progress=False, checkpoint_every=2, num_seeds=2,
)  # fmt: skip


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-seed run of 2 iterations resumed to 4, and the same run in one piece."""
    base = tmp_path_factory.mktemp("host")
    first = train(Config(total_steps=B * 2, **SMALL), run_dir=base / "resumed")
    resumed = resume(base / "resumed", total_steps=B * 4)
    whole = train(Config(total_steps=B * 4, **SMALL), run_dir=base / "whole")
    return base, first, resumed, whole


def test_host_run_evaluates_every_seed_and_resumes_with_the_same_keys(run):
    base, first, resumed, whole = run
    assert [e["env_steps"] for e in first.evaluations] == [B * 2]
    assert [e["env_steps"] for e in resumed.evaluations] == [B * 4]
    assert [e["env_steps"] for e in whole.evaluations] == [B * 2, B * 4]
    for result in (first, resumed, whole):
        for e in result.evaluations:
            assert len(e["per_seed"]) == 2
            for row in e["per_seed"]:  # InvertedPendulum-v5 pays 1 per step, 0 on the step that falls
                length = row["eval/episode_length"]
                assert 1 <= length <= 1000
                assert row["eval/episode_return"] == (length if length == 1000 else length - 1)
    # The envs were reset on resume (their state is not checkpointed), so the parameters may differ, but the keys,
    # counters and log rows continue as in the run that was never stopped.
    np.testing.assert_array_equal(np.asarray(resumed.state.key), np.asarray(whole.state.key))
    assert int(resumed.state.iteration) == int(whole.state.iteration) == 4
    rows = _rows(base / "resumed")
    assert [(r["env_steps"], r["seed"]) for r in rows] == [(r["env_steps"], r["seed"]) for r in _rows(base / "whole")]
    assert rows[0]["eval/episode_return"] == _rows(base / "whole")[0]["eval/episode_return"]


def test_cli_eval_export_and_video_of_a_host_run(run, tmp_path, capsys):
    base = run[0]
    assert main(["eval", str(base / "whole"), "--episodes", "2", "--seed-index", "1"]) == 0
    out = capsys.readouterr().out
    assert ENV in out and "deterministic" in out and "stochastic" in out
    policy = load(base / "whole", seed_index=1)
    assert (policy.obs_size, policy.action_size, policy.env) == (4, 1, ENV)
    pytest.importorskip("onnxruntime")
    assert main(["export", str(base / "whole"), "--out", str(tmp_path / "p.onnx")]) == 0
    assert (tmp_path / "p.onnx").stat().st_size > 0
    assert main(["video", str(base / "whole"), "--out", str(tmp_path / "v.mp4"), "--max-steps", "4"]) == 0
    assert (tmp_path / "v.mp4").stat().st_size > 0


class NaNAtCall(gymnasium.vector.VectorWrapper):
    """Env 0's observation is NaN on the ``at``-th step call."""

    def __init__(self, env, at: int):
        super().__init__(env)
        self.calls, self.at = 0, at

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self.calls += 1
        if self.calls == self.at:
            obs = obs.copy()
            obs[0] = np.nan
        return obs, reward, terminated, truncated, info


def test_guard_resets_a_host_env_gone_nan_and_env_objects_train(tmp_path):
    """``train(config, env=VectorEnv, eval_env=VectorEnv)``: the run is labelled by the env's id; a NaN
    observation rolls the iteration back, resets that env, and training goes on."""
    make = lambda n: gymnasium.make_vec("InvertedPendulum-v5", num_envs=n, vectorization_mode="sync")
    config = Config(**{**SMALL, "env": "CartpoleBalance", "total_steps": B * 3, "eval_every": B * 3})
    result = train(config, run_dir=tmp_path / "nan", env=NaNAtCall(make(16), at=12), eval_env=make(4))
    assert result.config.env == ENV
    rows = _rows(tmp_path / "nan")
    by_seed = {r["seed"]: r for r in rows}  # env 0 belongs to the first seed
    assert float(by_seed["1"]["health/rolled_back"]) == 1 and float(by_seed["1"]["health/bad_envs"]) == 1
    assert float(by_seed["2"]["health/rolled_back"]) == 0 and float(by_seed["2"]["health/bad_envs"]) == 0
    assert int(result.state.iteration) == 3 and np.isfinite(result.final_return)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(result.state.learner))
