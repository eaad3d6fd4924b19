"""The training and evaluation envs of a run, from its config's env id or from env objects the user passes
(``reppo.train(config, env=...)``), and the reward scale of the task presets.

An env object may be a Gymnasium ``VectorEnv`` (host path), a single JAX env with the Brax / MuJoCo Playground
interface (``reset(rng) -> State``, ``step(State, action) -> State`` with ``.obs``, ``.reward``, ``.done``, and
``action_size``; batched by :class:`reppo.envs.playground.AutoResetVecEnv`, fused path), or a ready
:class:`reppo.envs.base.VecEnv` / :class:`reppo.envs.base.HostVecEnv`.
"""

from __future__ import annotations

from typing import Any

from reppo.envs.base import HostVecEnv
from reppo.envs.families import CUSTOM


class ScaledRewards:
    """``env`` (a VecEnv or a HostVecEnv) with every step's reward multiplied by ``scale``."""

    def __init__(self, env: Any, scale: float):
        self.env, self.scale = env, float(scale)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def step(self, *args):
        *rest, result = self.env.step(*args)
        return (*rest, result.replace(reward=result.reward * self.scale))


def is_vector_env(env: Any) -> bool:
    """A Gymnasium-style vector env (EnvPool's and ManiSkill's included)."""
    return hasattr(env, "single_action_space") and hasattr(env, "num_envs") and hasattr(env, "step")


def is_single_jax_env(env: Any) -> bool:
    has = lambda name: hasattr(env, name)
    return has("reset") and has("step") and has("action_size") and not has("num_envs")


def label(env: Any, given: str) -> str:
    """The ``config.env`` of a run on ``env``: ``given`` when it names a family (``gymnasium:...``); the Gymnasium
    id of a vector env built by ``gymnasium.make_vec``; else ``custom:ClassName``."""
    if ":" in given:
        return given
    spec_id = getattr(getattr(env, "spec", None), "id", None)
    if is_vector_env(env) and spec_id:
        return f"gymnasium:{spec_id}"
    return f"{CUSTOM}:{type(env).__name__}"


def from_object(env: Any, num_envs: int, episode_length: int, randomize_steps: bool = True, name: str = ""):
    """A VecEnv or HostVecEnv of ``num_envs`` envs from an env object (see the module doc)."""
    from reppo.envs.gymnasium import GymnasiumVecEnv
    from reppo.envs.playground import AutoResetVecEnv

    if is_vector_env(env):
        env = GymnasiumVecEnv(env, episode_length, reseed=not randomize_steps, name=name)
    elif is_single_jax_env(env):
        return AutoResetVecEnv(env, num_envs, episode_length, randomize_steps=randomize_steps, name=name)
    elif not (hasattr(env, "num_envs") and hasattr(env, "obs_size") and hasattr(env, "step")):
        raise TypeError(f"env of type {type(env).__name__} is not supported; allowed: a Gymnasium VectorEnv, a JAX "
                        "env with the Brax / Playground interface, or a reppo VecEnv / HostVecEnv")  # fmt: skip
    if env.num_envs != num_envs:
        raise ValueError(f"env has {env.num_envs} envs; this run needs num_envs * num_seeds (or eval_envs * num_seeds "
                         f"for eval_env) = {num_envs}")  # fmt: skip
    return env


def build_envs(config, env: Any = None, eval_env: Any = None) -> tuple[Any, Any]:
    """(training env of num_envs * num_seeds envs with the rewards scaled, evaluation env of eval_envs * num_seeds
    envs) for a resolved ``config``; from ``config.env`` unless env objects are given."""
    from reppo.envs import make_env, task_defaults
    from reppo.envs.render import renders

    if config.video and not renders(config.env):
        from reppo.config import ConfigError

        raise ConfigError(f"video=True: {config.env!r} cannot be rendered; allowed: gymnasium: ids, envpool: ports of "
                          "Gymnasium tasks, MuJoCo Playground ids")  # fmt: skip
    n, n_eval = config.num_envs * config.num_seeds, config.eval_envs * config.num_seeds
    if env is None:
        train = make_env(config.env, n, impl=config.impl)
        evaluation = make_env(config.env, n_eval, impl=config.impl, randomize_steps=False)
    else:
        steps = task_defaults(config.env).episode_length if not config.env.startswith(CUSTOM + ":") else 1000
        steps = getattr(env, "episode_length", None) or steps
        train = from_object(env, n, steps, name=config.env)
        if eval_env is None and is_single_jax_env(env):
            eval_env = env
        if eval_env is None:
            raise ValueError(f"pass eval_env= as well: a {type(env).__name__} cannot be copied for evaluation "
                             f"(a vector env of eval_envs * num_seeds = {n_eval} envs)")  # fmt: skip
        evaluation = from_object(eval_env, n_eval, steps, randomize_steps=False, name=config.env)
    if config.reward_scale != 1.0:
        train = ScaledRewards(train, config.reward_scale)
    return train, evaluation


def is_host(env: Any) -> bool:
    return isinstance(env, HostVecEnv)
