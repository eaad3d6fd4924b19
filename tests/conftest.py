"""Session-wide test set-up: one persistent XLA compilation cache for this test session (its xdist workers and
their subprocesses), so the many small runs of the lifecycle tests compile each program once."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    from reppo.training import enable_compilation_cache

    base = tmp_path_factory.getbasetemp()
    # Under pytest-xdist each worker has its own basetemp (<root>/popen-gwN); the workers share <root>/xla-cache.
    path = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "xla-cache"
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(path)
    return enable_compilation_cache(path)


# The files that take longest (mostly XLA compilation) run first, so that the two xdist workers, one file each at
# a time, finish together instead of one waiting on a long file started last. Seconds per file with two workers
# on a 2-core CPU: test_training 436, algo/test_learner + test_rollout 152, test_cli 131, test_health 119,
# test_files 72, test_config 64, envs/test_playground 59; all 1,238. envs/test_robots took 28-54 s alone on a
# loaded machine. In the slow suite, learning/test_dm_control_learn.py (both cases on one worker: 11 minutes alone,
# 19 beside the other worker in CI) goes first for the same reason; the default suite deselects it.
LONGEST_FIRST = (
    "learning/test_dm_control_learn.py", "test_training.py", "test_rollout.py", "algo/test_learner.py", "test_cli.py",
    "test_health.py", "test_files.py", "test_config.py", "envs/test_playground.py", "envs/test_robots.py",
)  # fmt: skip


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return next((i for i, name in enumerate(LONGEST_FIRST) if path.endswith(name)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the order within and among the other files is kept
