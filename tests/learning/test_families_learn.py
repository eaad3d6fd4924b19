"""Learning through the other env families: the host path on Gymnasium MuJoCo (InvertedPendulum-v5) and the fused
path on gymnax (Pendulum-v1), each within a budget of minutes on a 2-core CPU."""

from __future__ import annotations

import pytest

from reppo.config import Config
from reppo.training import train

SMALL = dict(num_envs=16, num_steps=32, num_minibatches=8, num_epochs=4, critic_width=64, actor_width=64,
             critic_lr=1e-3, dual_lr=1e-3, eval_envs=4, progress=False)  # fmt: skip


@pytest.mark.slow
def test_host_path_learns_to_balance_the_inverted_pendulum(tmp_path):
    """A random policy falls after about 5-10 steps (return = steps before the fall); balancing scores 1000."""
    config = Config(env="gymnasium:InvertedPendulum-v5", total_steps=40_960, eval_every=10_240, **SMALL)
    result = train(config, run_dir=tmp_path / "run", echo=lambda *_: None)
    returns = [e["eval/episode_return"] for e in result.evaluations]
    assert max(returns[-2:]) >= 500, returns


@pytest.mark.slow
def test_fused_path_learns_the_gymnax_pendulum(tmp_path):
    """Pendulum-v1 (200 steps): a random policy scores about -1200, swinging up and holding about -150 to -200."""
    config = Config(env="gymnax:Pendulum-v1", total_steps=61_440, eval_every=20_480, **SMALL)
    result = train(config, run_dir=tmp_path / "run", echo=lambda *_: None)
    returns = [e["eval/episode_return"] for e in result.evaluations]
    assert max(returns[-2:]) >= -400, returns
