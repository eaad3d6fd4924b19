"""Brax envs (``brax:NAME``, ``brax.envs``) for the fused path.

A Brax env has MuJoCo Playground's single-env API (``reset(rng) -> State``, ``step(State, action) -> State`` with
``.obs``, ``.reward``, ``.done``; ``action_size``; actions in [-1, 1]), so :class:`reppo.envs.playground.
AutoResetVecEnv` batches it, adds the time limit (1000 steps) as truncation and keeps the true final observation;
Brax's ``done`` (an unhealthy robot) is a termination. As the authors' Brax runner does: the ``generalized``
backend and ``terminate_when_unhealthy`` (the envs that have it); Brax's own episode and auto-reset wrappers are
not used.
"""

from __future__ import annotations

import inspect

BACKEND = "generalized"


def load_brax(name: str):
    from brax import envs

    from reppo.envs.playground import UnknownEnvError

    if name not in envs._envs:
        raise UnknownEnvError(f"unknown Brax env {name!r}; allowed: {', '.join(sorted(envs._envs))}")
    kwargs = {"backend": BACKEND}
    if "terminate_when_unhealthy" in inspect.signature(envs._envs[name]).parameters:
        kwargs["terminate_when_unhealthy"] = True
    return envs.get_environment(name, **kwargs)
