"""Discrete REPPO end to end (docs/discrete.md): runs on gymnax CartPole-v1 (fused path) and Gymnasium CartPole-v1
(host path) with several seeds, exact resume, the loaded policy against its ONNX export (an independent
implementation of the forward pass), greedy evaluation, and the CLI commands that read a run folder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reppo import Config, load, resume, train
from reppo.cli import main
from reppo.evaluate import evaluate_policy
from reppo.logging import read_metrics
from reppo.nets import DiscreteActor

B = 8 * 8
SMALL = dict(
    num_envs=8, num_steps=8, num_minibatches=2, num_epochs=2, critic_width=16, actor_width=16, actor_depth=2,
    eval_every=B * 2, eval_envs=2, progress=False, checkpoint_every=2, num_seeds=2,
)  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """gymnax CartPole-v1, 2 seeds: 2 iterations resumed to 4, and the same run in one piece."""
    pytest.importorskip("gymnax")
    base = tmp_path_factory.mktemp("discrete")
    config = Config(env="gymnax:CartPole-v1", **SMALL)
    train(Config(**{**vars(config), "total_steps": B * 2}), run_dir=base / "resumed")
    resumed = resume(base / "resumed", total_steps=B * 4)
    whole = train(Config(**{**vars(config), "total_steps": B * 4}), run_dir=base / "whole")
    return base, resumed, whole


def test_discrete_run_resumes_bit_for_bit_and_logs_the_categorical_metrics(run):
    base, resumed, whole = run
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(whole.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    rows = read_metrics(base / "whole" / "metrics.csv")
    assert [(r["env_steps"], r["seed"]) for r in rows] == [(str(B * 2), "1"), (str(B * 2), "2"), (str(B * 4), "1"),
                                                          (str(B * 4), "2")]  # fmt: skip
    assert "train/policy_max_prob" in rows[0] and "train/policy_std" not in rows[0]
    for r in rows:  # CartPole pays 1 per step: a greedy episode's return is its length
        assert 1 <= float(r["eval/episode_length"]) <= 500
        assert float(r["eval/episode_return"]) == float(r["eval/episode_length"])
        assert 1 / 2 <= float(r["train/policy_max_prob"]) <= 1  # of 2 actions


def test_loaded_policy_acts_like_its_onnx_export(run, tmp_path):
    """The argmax and logits of the loaded policy equal those of the ONNX graph built from its parameters, on
    fresh random observations; a stochastic action needs a key and lies in {0, 1}."""
    ort = pytest.importorskip("onnxruntime")
    base = run[0]
    policy = load(base / "whole", seed_index=1)
    assert isinstance(policy.actor, DiscreteActor)
    assert (policy.obs_size, policy.action_size, policy.num_actions, policy.env) == (4, 1, 2, "gymnax:CartPole-v1")
    assert main(["export", str(base / "whole"), "--seed-index", "1", "--out", str(tmp_path / "p.onnx")]) == 0
    session = ort.InferenceSession(str(tmp_path / "p.onnx"))
    obs = np.random.default_rng().normal(0, 2, (256, 4)).astype(np.float32)
    action, logits = session.run(["action", "logits"], {"obs": obs})
    np.testing.assert_allclose(logits, np.asarray(policy.distribution(obs)), rtol=1e-4, atol=1e-5)
    near_tie = np.abs(logits[:, 0] - logits[:, 1]) < 1e-4
    np.testing.assert_array_equal(policy(obs)[~near_tie], action[~near_tie])
    assert policy(obs).dtype == np.int32 and policy(obs[0]).shape == ()
    with pytest.raises(ValueError, match="a stochastic action needs a PRNG key"):
        policy(obs, deterministic=False)
    sampled = policy(obs, deterministic=False, key=jax.random.PRNGKey(0))
    assert set(np.unique(sampled)) <= {0, 1}


def test_greedy_evaluation_and_cli_eval(run, capsys):
    base = run[0]
    out = evaluate_policy(load(base / "whole"), 3, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(out.returns, out.lengths)
    assert out.returns.shape == (3,) and np.all((out.lengths >= 1) & (out.lengths <= 500))
    assert main(["eval", str(base / "whole"), "--episodes", "2"]) == 0
    assert "gymnax:CartPole-v1" in capsys.readouterr().out


def test_host_path_discrete_run_evaluates_and_records_a_video(tmp_path):
    """Gymnasium CartPole-v1 on the host path: trains, evaluates every seed, and renders (pygame)."""
    pytest.importorskip("pygame")
    config = Config(env="gymnasium:CartPole-v1", total_steps=B * 2, **SMALL)
    result = train(config, run_dir=tmp_path / "host")
    assert [len(e["per_seed"]) for e in result.evaluations] == [2]
    for row in result.evaluations[0]["per_seed"]:
        assert 1 <= row["eval/episode_length"] <= 500 and row["eval/episode_return"] == row["eval/episode_length"]
    assert main(["video", str(tmp_path / "host"), "--out", str(tmp_path / "v.mp4"), "--max-steps", "4"]) == 0
    assert (tmp_path / "v.mp4").stat().st_size > 0


def test_minatar_grids_train_through_a_cnn_that_the_checkpoint_rebuilds(tmp_path):
    """gymnax Breakout-MinAtar (10 x 10 x 4 grids): the default encoder="auto" gives actor and critic a
    ConvEncoder, the checkpoint records the image layout and ``load`` rebuilds that actor, whose logits equal the
    trained actor's on fresh observations; encoder="mlp" keeps the flattened grid."""
    pytest.importorskip("gymnax")
    from reppo.algo.learner import Spaces
    from reppo.envs import make_env
    from reppo.envs.spaces import Image
    from reppo.normalization import normalize

    env = make_env("gymnax:Breakout-MinAtar", 2)
    assert (Spaces.of(env).image, Spaces.of(env, "cnn").image, Spaces.of(env, "mlp").image) == (
        Image(10, 10, 4),
    ) * 2 + (None,)
    result = train(Config(env="gymnax:Breakout-MinAtar", total_steps=B * 2, **SMALL), run_dir=tmp_path / "run")
    actor_params = jax.tree.map(lambda x: x[1], result.state.learner.actor_params)
    assert "ConvEncoder_0" in actor_params["params"] and "conv" in result.state.learner.critic_params["params"]
    policy = load(tmp_path / "run", seed_index=1)
    assert policy.actor.image == Image(10, 10, 4)
    obs = (np.random.default_rng().random((16, 400)) < 0.1).astype(np.float32)
    x = normalize(jnp.asarray(obs), policy.obs_mean, policy.obs_var)
    np.testing.assert_allclose(np.asarray(policy.distribution(obs)), np.asarray(policy.actor.apply(actor_params, x)),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    assert all(np.isfinite(e["eval/episode_return"]) for e in result.evaluations)


@pytest.mark.slow  # builds EnvPool Atari pools and compiles a learner on 28,224-wide inputs: about 30 s
def test_atari_frames_train_on_the_host_path():
    """EnvPool Breakout-v5 (4 x 84 x 84 frames, read by the Nature CNN of ``--encoder auto``): two host-path
    iterations update the actor, with finite losses and a near-uniform initial policy over the 4 actions."""
    pytest.importorskip("envpool")
    from reppo import parallel
    from reppo.config import resolve
    from reppo.envs import make_env
    from reppo.rollout import make_rollout

    config = resolve(Config(env="envpool:Breakout-v5", num_envs=4, num_steps=4, num_minibatches=2, num_epochs=1,
                            critic_width=16, actor_width=16, actor_depth=1, eval_envs=1))  # fmt: skip
    rollout = make_rollout(config, make_env(config.env, 4))
    mesh = parallel.make_mesh(1)
    start = parallel.to_host(rollout.start(jax.random.PRNGKey(0)[None]))
    shardings = parallel.state_shardings(start, mesh, rollout.env.num_envs)
    iterate, _ = rollout.compile(parallel.put(start, shardings), shardings, mesh)
    state = parallel.put(start, shardings)
    for _ in range(2):
        state, metrics = iterate(state)
        assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
        assert float(np.max(metrics["policy_max_prob"])) < 0.5  # near uniform over 4 actions
    before, after = (
        jax.tree.leaves(start.learner.actor_params),
        jax.tree.leaves(parallel.to_host(state).learner.actor_params),
    )
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert "ConvEncoder_0" in start.learner.actor_params["params"]


def test_continuous_only_settings_on_a_discrete_env_are_one_line(tmp_path, capsys):
    """A tanh-Gaussian setting the user changed has no effect with discrete actions: a one-line error (exit 2 from
    the CLI) before any file is written; the presets' own values (paper-small's 64 value samples) are accepted."""
    pytest.importorskip("gymnax")
    from reppo.config import ConfigError, check_action_space, preset_config

    with pytest.raises(ConfigError, match=r"^num_kl_samples=8: 'gymnax:CartPole-v1' has 2 discrete actions"):
        train(Config(env="gymnax:CartPole-v1", num_kl_samples=8, **SMALL), run_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    args = ["train", "--env", "gymnax:CartPole-v1", "--min-std", "0.1", "--run-dir", str(tmp_path / "cli")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "min_std=0.1" in err and "continuous actions only" in err
    check_action_space(preset_config("paper-small", env="gymnax:CartPole-v1"), 2)
    check_action_space(Config(env="gymnax:Pendulum-v1", num_kl_samples=8), 0)
