"""The NaN/Inf guard: faults injected through an env wrapper (NaN observations, huge or infinite rewards) are rolled
back, the bad envs reset and counted in ``health/*``; persistent faults stop the run with a one-line report and an
intact last good checkpoint; a healthy run is bitwise unchanged by the guard."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from closeness import assert_same_run
from flax import struct

from reppo import Config, load, train
from reppo import envs as envs_module
from reppo.algo.guard import HEALTH_METRICS
from reppo.cli import main
from reppo.config import resolve
from reppo.envs import make_env
from reppo.envs.base import EnvState
from reppo.logging import read_metrics
from reppo.rollout import make_rollout
from reppo.training import TrainingDivergedError

ROWS = 8  # fault schedule rows: row r applies to iteration r + 1; the last row repeats for later iterations


@struct.dataclass
class Faults:
    nan_obs: jax.Array
    """(ROWS, N) bool: envs whose observation becomes NaN."""
    reward_add: jax.Array
    """(ROWS, N) float32: added to the envs' reward."""
    rollout: jax.Array
    """() int32: rollouts started so far."""
    t: jax.Array
    """() int32: steps since the current rollout started."""


class FaultyEnv:
    """A reppo VecEnv whose step ``at_step`` of each rollout is corrupted as its fault schedule says. The schedule
    lives in the env state, so every scenario runs the same compiled iteration."""

    def __init__(self, env, at_step: int, nan_obs=None, reward_add=None):
        self.env, self.at_step = env, at_step
        for name in ("num_envs", "obs_size", "critic_obs_size", "action_size", "episode_length"):
            setattr(self, name, getattr(env, name))
        shape = (ROWS, env.num_envs)
        self._nan_obs = np.zeros(shape, bool) if nan_obs is None else np.asarray(nan_obs, bool)
        self._reward_add = np.zeros(shape, np.float32) if reward_add is None else np.asarray(reward_add, np.float32)

    @staticmethod
    def _wrap(inner: EnvState, faults: Faults, obs=None, critic_obs=None) -> EnvState:
        return EnvState(
            inner=inner,
            obs=inner.obs if obs is None else obs,
            critic_obs=inner.critic_obs if critic_obs is None else critic_obs,
            steps=inner.steps,
            extra=faults,
        )

    def reset(self, key):
        zero = jnp.zeros((), jnp.int32)
        faults = Faults(jnp.asarray(self._nan_obs), jnp.asarray(self._reward_add), zero, zero)
        return self._wrap(self.env.reset(key), faults)

    def prepare_rollout(self, state, key):
        f = state.extra
        inner = self.env.prepare_rollout(state.inner, key)
        return state.replace(inner=inner, extra=f.replace(rollout=f.rollout + 1, t=jnp.zeros_like(f.t)))

    def step(self, state, action):
        f = state.extra
        inner, result = self.env.step(state.inner, action)
        row = jnp.clip(f.rollout - 1, 0, ROWS - 1)
        now = f.t == self.at_step
        nan = f.nan_obs[row] & now
        poison = lambda x: jnp.where(nan[:, None], jnp.nan, x)
        result = result.replace(
            reward=result.reward + jnp.where(now, f.reward_add[row], 0.0),
            next_obs=poison(result.next_obs),
            next_critic_obs=poison(result.next_critic_obs),
        )
        faults = f.replace(t=f.t + 1)
        return self._wrap(inner, faults, poison(inner.obs), poison(inner.critic_obs)), result

    def reset_where(self, state, mask, key):
        return self._wrap(self.env.reset_where(state.inner, mask, key), state.extra)


def schedule(num_envs: int, nan=(), reward=()) -> tuple[np.ndarray, np.ndarray]:
    """``nan``: (iteration, envs) pairs; ``reward``: (iteration, envs, value) triples (iterations from 1)."""
    nan_obs, reward_add = np.zeros((ROWS, num_envs), bool), np.zeros((ROWS, num_envs), np.float32)
    for it, envs in nan:
        nan_obs[it - 1, envs] = True
    for it, envs, value in reward:
        reward_add[it - 1, envs] = value
    return nan_obs, reward_add


def with_faults(state, nan=(), reward=()):
    f = state.env_state.extra
    nan_obs, reward_add = schedule(f.nan_obs.shape[1], nan, reward)
    faults = f.replace(nan_obs=jnp.asarray(nan_obs), reward_add=jnp.asarray(reward_add))
    return state.replace(env_state=state.env_state.replace(extra=faults))


# ---------------------------------------------------------------------------------------------------------------
# The jitted iteration on ToyAsymmetric (one compile per guard setting and seed count)

TINY = dict(
    num_envs=8, num_steps=4, num_minibatches=2, num_epochs=2, critic_width=16, actor_width=16, num_value_samples=3,
    value_chunk_size=12, eval_envs=2,
)  # fmt: skip
LEARNER = ("actor_params", "critic_params", "log_duals", "actor_opt", "critic_opt", "dual_opt", "obs_stats",
           "critic_obs_stats")  # fmt: skip


@functools.cache
def _toy(max_bad: int = 3, num_seeds: int = 1):
    config = resolve(Config(env="ToyAsymmetric", max_bad_iterations=max_bad, num_seeds=num_seeds, **TINY))
    env = FaultyEnv(make_env("ToyAsymmetric", config.num_envs * num_seeds, episode_length=50), config.num_steps - 1)
    rollout = make_rollout(config, env)
    return config, jax.jit(rollout.init), jax.jit(rollout.iteration)


def _init(init, num_seeds=1, seed=0):
    key = jax.random.PRNGKey(seed)
    return init(key[None] if num_seeds == 1 else jax.random.split(key, num_seeds))


def _run(iteration, state, n):
    states, metrics = [state], []
    for _ in range(n):
        state, m = iteration(state)
        states.append(state)
        metrics.append({k: np.squeeze(np.asarray(v)) for k, v in m.items()})  # one seed: scalars
    return states, metrics


def _learner(state, seed=None):
    tree = [getattr(state.learner, name) for name in LEARNER]
    return tree if seed is None else jax.tree.map(lambda x: x[seed], tree)


def _equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _finite(tree) -> bool:
    return all(np.all(np.isfinite(x)) for x in jax.tree.leaves(tree) if np.issubdtype(np.asarray(x).dtype, np.inexact))


def test_reset_where_resets_only_masked_envs():
    env = make_env("ToyAsymmetric", 6, episode_length=50)
    state = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    for _ in range(3):
        state, _ = step(state, jnp.full((6, 2), 0.5))
    reset_where = jax.jit(env.reset_where)
    mask = np.array([False, True, False, False, True, False])
    new = reset_where(state, jnp.asarray(mask), jax.random.PRNGKey(1))
    assert np.all(np.asarray(new.steps)[mask] == 0) and np.all(np.asarray(new.extra.episode_return)[mask] == 0)
    assert not np.allclose(np.asarray(new.obs)[mask], np.asarray(state.obs)[mask])
    keep = lambda s: jax.tree.map(lambda x: np.asarray(x)[~mask], (s.inner, s.obs, s.critic_obs, s.steps))
    assert _equal(keep(new), keep(state))
    assert _equal(new.extra.pool, state.extra.pool)  # the reset pool is not consumed
    assert _equal(reset_where(state, jnp.zeros(6, bool), jax.random.PRNGKey(1)), state)


@pytest.mark.parametrize("num_seeds", [1, 2])
def test_guard_does_not_change_a_healthy_run(num_seeds):
    runs = {}
    for max_bad in (0, 3):
        _, init, iteration = _toy(max_bad, num_seeds)
        start = _init(init, num_seeds)
        states, metrics = _run(iteration, start, 3)
        runs[max_bad] = states[-1]
        if max_bad:
            assert all(np.all(m["health/rolled_back"] == 0) and np.all(m["health/bad_envs"] == 0) for m in metrics)
            assert set(HEALTH_METRICS) <= set(metrics[0])
        else:
            assert not any(k.startswith("health/") for k in metrics[0])
    # Every leaf, env state included: the same run. The guard is compiled in or out, two programs, so the check is
    # up to float summation order (bitwise on the machines measured; tests/closeness.py says why not required).
    assert_same_run(runs[3], runs[0], start)


def test_transient_nan_observation_is_rolled_back_and_envs_reset():
    config, init, iteration = _toy()
    bad = [2, 5]
    states, metrics = _run(iteration, with_faults(_init(init), nan=[(3, bad)]), 5)
    assert [float(m["health/rolled_back"]) for m in metrics] == [0, 0, 1, 0, 0]
    m = metrics[2]
    assert (m["health/nonfinite_obs"], m["health/nonfinite_reward"], m["health/bad_envs"]) == (1, 0, len(bad))
    before, after = states[2], states[3]
    assert _equal(_learner(after), _learner(before))  # the update is discarded: parameters bitwise unchanged
    assert int(after.iteration) == int(before.iteration) + 1 and not _equal(after.key, before.key)
    assert np.all(np.asarray(after.env_state.steps)[bad] == 0)
    assert _finite((after.env_state.obs, after.env_state.critic_obs))
    for i in (3, 4):  # later iterations update normally and stay finite
        assert not _equal(states[i + 1].learner.actor_params, states[i].learner.actor_params)
        assert _finite(_learner(states[i + 1]))


def test_same_fault_without_the_guard_poisons_the_parameters():
    _, init, iteration = _toy(max_bad=0)
    states, _ = _run(iteration, with_faults(_init(init), nan=[(2, [1])]), 2)
    assert _finite(_learner(states[1])) and not _finite(_learner(states[2]))


@pytest.mark.parametrize(("value", "reward_flag", "bad_envs"), [(1e30, 0, 0), (math.inf, 1, 1)])
def test_huge_reward_is_rolled_back(value, reward_flag, bad_envs):
    _, init, iteration = _toy()
    states, metrics = _run(iteration, with_faults(_init(init), reward=[(2, [4], value)]), 3)
    m = metrics[1]
    assert float(m["health/rolled_back"]) == 1 and float(m["health/nonfinite_obs"]) == 0
    assert float(m["health/nonfinite_reward"]) == reward_flag and float(m["health/bad_envs"]) == bad_envs
    assert float(m["health/nonfinite_loss"]) == 1  # 1e30 is finite, but its squared error in the aux loss is not
    assert _equal(_learner(states[2]), _learner(states[1]))
    assert float(metrics[2]["health/rolled_back"]) == 0 and _finite(_learner(states[3]))


def test_seeds_roll_back_independently():
    config, init, iteration = _toy(num_seeds=2)
    n = config.num_envs
    bad = [n + 1, n + 3]  # envs of the second seed
    states, metrics = _run(iteration, with_faults(_init(init, 2), nan=[(2, bad)]), 3)
    np.testing.assert_array_equal(metrics[1]["health/rolled_back"], [0, 1])
    np.testing.assert_array_equal(metrics[1]["health/bad_envs"], [0, 2])
    assert not _equal(_learner(states[2], 0), _learner(states[1], 0))  # seed 0 updated
    assert _equal(_learner(states[2], 1), _learner(states[1], 1))  # seed 1 rolled back
    np.testing.assert_array_equal(np.asarray(states[2].iteration), [2, 2])
    assert np.all(np.asarray(states[2].env_state.steps)[bad] == 0) and _finite(states[2].env_state.obs)
    np.testing.assert_array_equal(metrics[2]["health/rolled_back"], [0, 0])
    assert _finite(_learner(states[3]))


@functools.cache
def _cartpole():
    """The guarded iteration of one seed on the real CartpoleBalance, at the toy's tiny sizes."""
    config = resolve(Config(env="CartpoleBalance", **TINY))
    rollout = make_rollout(config, make_env("CartpoleBalance", config.num_envs))
    return config, jax.jit(rollout.init), jax.jit(rollout.iteration)


def test_physics_divergence_is_counted_rolled_back_and_reset():
    """A real divergence: one env's cart set moving at 1e20 (finite), which MJX's next step turns into NaN. The
    rollout passes the NaN observation and reward on; the guard counts them, rolls the update back and resets the
    env, and the next iteration updates normally."""
    config, init, iteration = _cartpole()
    seed = int(np.random.default_rng().integers(2**31))
    k = seed % config.num_envs
    state, _ = iteration(_init(init, seed=seed))
    data = state.env_state.inner.data
    inner = state.env_state.inner.replace(data=data.replace(qvel=data.qvel.at[k].set(1e20)))
    states, metrics = _run(iteration, state.replace(env_state=state.env_state.replace(inner=inner)), 2)
    m = metrics[0]
    assert (m["health/nonfinite_obs"], m["health/nonfinite_reward"], m["health/rolled_back"]) == (1, 1, 1), seed
    assert m["health/bad_envs"] == 1, seed  # (nonfinite_params too: the statistics merged the NaN observation)
    assert _equal(_learner(states[1]), _learner(states[0]))  # the update is discarded
    assert _finite((states[1].env_state.obs, states[1].env_state.inner.data.qvel))
    assert metrics[1]["health/rolled_back"] == 0 and metrics[1]["health/bad_envs"] == 0, seed
    assert not _equal(states[2].learner.actor_params, states[1].learner.actor_params) and _finite(_learner(states[2]))


# ---------------------------------------------------------------------------------------------------------------
# train() and the CLI on the real CartpoleBalance, all with one fault schedule (one compile, then cache hits):
# iteration 2: NaN observations in envs 1 and 5; iteration 3: reward 1e30 in env 3; iterations 6, 7, ...: NaN
# observation in env 0.

B = 16 * 8
SMALL = dict(
    env="CartpoleBalance", num_envs=16, num_steps=8, num_minibatches=2, critic_width=32, actor_width=32,
    actor_depth=2, eval_every=B * 2, eval_envs=4, progress=False, max_bad_iterations=3,
)  # fmt: skip
CARTPOLE_FAULTS = dict(nan=[(2, [1, 5])] + [(i, [0]) for i in range(6, ROWS + 1)], reward=[(3, [3], 1e30)])


@pytest.fixture
def faulty_cartpole(monkeypatch):
    """``train`` gets a FaultyEnv for training (its evaluation env stays clean): ``reppo.envs.build`` looks
    ``make_env`` up in ``reppo.envs`` when it builds a run's envs."""
    real = envs_module.make_env

    def make(env_id, num_envs, **kwargs):
        env = real(env_id, num_envs, **kwargs)
        if not kwargs.get("randomize_steps", True):
            return env
        return FaultyEnv(env, SMALL["num_steps"] - 1, *schedule(num_envs, **CARTPOLE_FAULTS))

    monkeypatch.setattr(envs_module, "make_env", make)


def _csv_rows(run_dir: Path) -> list[dict[str, Any]]:
    rows = read_metrics(run_dir / "metrics.csv")
    return [{k: float(v) for k, v in row.items()} for row in rows]  # every value parses


@pytest.mark.slow  # real runs of a minute or more: the slow command (CI runs both)
def test_training_continues_after_transient_faults(faulty_cartpole, tmp_path):
    lines: list[str] = []
    result = train(Config(total_steps=B * 5, checkpoint_every=0, **SMALL), run_dir=tmp_path / "run", echo=lines.append)
    warnings = [line for line in lines if "warning" in line]
    assert len(warnings) == 1 and "iteration 2: non-finite obs" in warnings[0] and "2 envs reset" in warnings[0]
    rows = _csv_rows(tmp_path / "run")
    assert [r["iteration"] for r in rows] == [2, 4, 5]
    health = [{k[len("health/") :]: r[k] for k in HEALTH_METRICS} for r in rows]
    assert (health[0]["rolled_back"], health[0]["bad_envs"], health[0]["nonfinite_obs"]) == (1, 2, 1)
    assert (health[1]["rolled_back"], health[1]["nonfinite_loss"], health[1]["bad_envs"]) == (1, 1, 0)
    assert health[2]["rolled_back"] == 0
    # the train/* means skip the rolled-back iterations, so they stay finite
    assert all(math.isfinite(r[k]) for r in rows for k in r if k.startswith("train/"))
    assert int(result.state.iteration) == 5 and _finite(_learner(result.state))


@pytest.mark.slow  # about 1 minute; the default suite stays under 15 minutes
@pytest.mark.parametrize(
    ("eval_every", "stopped_at", "logged"),
    [
        (2, 8, [2, 4, 6]),  # iteration 8 is an evaluation: its flags are read at once
        (5, 9, [5]),  # iteration 8 is not: its flags are read after iteration 9 was dispatched
    ],
)
def test_persistent_faults_stop_the_run_with_last_good_checkpoint(
    faulty_cartpole, tmp_path, eval_every, stopped_at, logged
):
    run = tmp_path / "run"
    config = Config(total_steps=B * 20, checkpoint_every=5, **{**SMALL, "eval_every": B * eval_every})
    with pytest.raises(TrainingDivergedError) as info:
        train(config, run_dir=run, echo=lambda _: None)
    exc = info.value
    message = str(exc)
    assert "\n" not in message and message.startswith("training diverged at iteration 8 (1,024 env steps)")
    assert "3 consecutive iterations rolled back for non-finite obs" in message and "3 envs reset" in message
    assert message.endswith(f"last good checkpoint: {run.absolute() / 'checkpoints' / str(stopped_at)}")
    assert (exc.iteration, exc.envs_reset, exc.checks[0]) == (8, 3, "obs")
    assert exc.checkpoint == run.absolute() / "checkpoints" / str(stopped_at)
    last, good = load(run), load(run, iteration=5)  # iterations 6, 7, 8 (and 9) were rolled back
    assert _finite(last.params)
    assert _equal(last.params, good.params) and _equal((last.obs_mean, last.obs_var), (good.obs_mean, good.obs_var))
    rows = _csv_rows(run)  # the log written before the stop is intact
    assert [r["iteration"] for r in rows] == logged
    if eval_every == 2:
        assert rows[-1]["health/rolled_back"] == 1


@pytest.mark.slow
def test_cli_exits_3_with_one_line(faulty_cartpole, tmp_path, capsys):
    flags = ["--run-dir", str(tmp_path / "run"), "--total-steps", str(B * 20), "--checkpoint-every", "0"]
    for name, value in SMALL.items():
        flag = "--" + name.replace("_", "-")
        flags += ["--no-" + flag[2:]] if value is False else [flag, str(value)]
    assert main(["train", *flags]) == 3
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("reppo: training diverged at iteration 8"), err
    assert err[0].endswith("checkpoints/8")
