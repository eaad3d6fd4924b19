"""Session-wide test set-up: one persistent XLA compilation cache for this test session (and its subprocesses),
so the many small runs of the lifecycle tests compile each program once."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    from reppo.training import enable_compilation_cache

    path = tmp_path_factory.mktemp("xla-cache")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(path)
    return enable_compilation_cache(path)
