"""Discrete REPPO learns (docs/discrete.md): gymnax CartPole-v1 with the embedded cpu preset reaches the maximum
return of 500 (every one of the 16 greedy evaluation episodes balances for the whole 500 steps) within 300k env
steps, about a minute on a 2-core CPU. A random policy scores about 22."""

from __future__ import annotations

import pytest

from reppo.config import Config
from reppo.training import train


@pytest.mark.slow
def test_cartpole_reaches_500(tmp_path):
    pytest.importorskip("gymnax")
    config = Config(env="gymnax:CartPole-v1", total_steps=300_000, eval_every=50_000, progress=False)
    result = train(config, run_dir=tmp_path / "run", echo=lambda *_: None)
    returns = [e["eval/episode_return"] for e in result.evaluations]
    assert max(returns) == 500.0, returns
    assert returns[-1] >= 450.0, returns
