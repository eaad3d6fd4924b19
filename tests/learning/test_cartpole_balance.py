"""Learning regression: the embedded default (`reppo train` with no flags) on the real CartpoleBalance task."""

from __future__ import annotations

import pytest

from reppo.config import Config
from reppo.training import train

# The embedded default must reach this deterministic evaluation return within its budget. Doing nothing scores about
# 695 on this task, a random policy far less, so 800 (the first target) proved little (issue 22); the published REPPO
# return is 999.8. Measured: docs/BENCHMARKS.md, "Learning: the embedded default".
THRESHOLD = 950.0


@pytest.mark.slow
def test_default_config_learns_cartpole_balance(tmp_path):
    result = train(Config(progress=False), run_dir=tmp_path / "run", echo=lambda *_: None)
    returns = [e["eval/episode_return"] for e in result.evaluations]
    assert max(returns[-2:]) >= THRESHOLD, returns
