"""The env families behind ``--env FAMILY:NAME``: which adapter builds them, which extra installs them, and their
task presets.

| prefix | adapter | rollout path | extra |
|---|---|---|---|
| (none) | MuJoCo Playground (:mod:`reppo.envs.playground`) | fused | (core) |
| ``gymnasium:`` | :mod:`reppo.envs.gymnasium` (any Gymnasium VectorEnv) | host | ``gymnasium`` |
| ``envpool:`` | :mod:`reppo.envs.envpool` | host | ``envpool`` |
| ``maniskill:`` | :mod:`reppo.envs.maniskill` | host | ``maniskill`` |
| ``brax:`` | :mod:`reppo.envs.brax` (our auto-reset wrapper) | fused | (core: Playground depends on Brax) |
| ``gymnax:`` | :mod:`reppo.envs.gymnax` (our auto-reset wrapper) | fused | ``gymnax`` |

Task presets and their sources (``reward_scale`` multiplies the rewards the learner sees; evaluation returns are
never scaled):

- Brax: gamma 0.99, reward scale 0.1, values [0, 150], humanoids [0, 200], 1000 steps: the paper's Brax settings
  (the authors' ``config/env/brax.yaml`` and ``humanoid_brax.yaml``).
- Gymnasium MuJoCo (HalfCheetah, Hopper, Walker2d, Ant, Humanoid, ... v4/v5): the same tasks as Brax's, so the
  same presets (the authors publish no Gymnasium MuJoCo config). Episode length from the env's registration.
- ManiSkill3: gamma = 1 - 10 / max_episode_steps, values [-15, 15], partial resets: the authors'
  ``config/env/maniskill.yaml`` and their gamma heuristic (``src/torchrl/envs.py``).
- EnvPool: ports of Playground tasks (same names, ``-v1``) take Playground's presets; its MuJoCo ports of
  Gymnasium tasks take the Gymnasium MuJoCo ones; its DM Control ports the paper's DM Control values.
- gymnax (ours: no published REPPO settings): Pendulum-v1 reward per step in [-16.3, 0], scaled by 0.1 over a
  horizon 1 / (1 - 0.99) = 100 gives values in [-163, 0]; we use [-170, 10] (soft values add entropy bonuses).
  MountainCarContinuous-v0: -0.1 a^2 per step and +100 at the goal: [-20, 110], scale 1. CartPole-v1: +1 per step
  for up to 500 steps, so values up to 1 / (1 - 0.99) = 100: [0, 110]. Acrobot-v1: -1 per step: [-110, 10].
- gymnax MinAtar (discrete, docs/discrete.md): gamma 0.99, values [0, 50], Asterix [0, 20]: the authors'
  ``config/env/minatar.yaml`` (``dev`` branch).
- An env object without a family id (``custom:ClassName``), and any other id of a family: gamma 0.99, scale 1,
  [-100, 100] (a guess: set --v-min/--v-max from the returns; the clipped-target fraction in the logs says when
  the range is wrong).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from reppo.envs.playground import EnvLoadError, UnknownEnvError

CUSTOM = "custom"
"""Label prefix of a run on an env object that has no family id (``custom:ClassName``; :mod:`reppo.envs.build`)."""


class MissingExtraError(EnvLoadError):
    """The family's optional dependency is not installed; the message says what to install."""


@dataclass(frozen=True)
class Family:
    prefix: str
    module: str
    """The package whose import means the family is installed."""
    extra: str
    """``pip install "reppo[EXTRA]"`` installs it."""
    host: bool
    """Stepped from Python (host rollout path) rather than inside the compiled iteration."""


FAMILIES = {
    f.prefix: f
    for f in (
        Family("gymnasium", "gymnasium", "gymnasium", True),
        Family("envpool", "envpool", "envpool", True),
        Family("maniskill", "mani_skill", "maniskill", True),
        Family("brax", "brax.envs", "brax", False),
        Family("gymnax", "gymnax", "gymnax", False),
    )
}

MUJOCO_TASKS = ("Ant", "HalfCheetah", "Hopper", "Humanoid", "HumanoidStandup", "InvertedDoublePendulum",
                "InvertedPendulum", "Pusher", "Reacher", "Swimmer", "Walker2d")  # fmt: skip
GYMNAX_PRESETS = {
    "Pendulum-v1": (0.99, -170.0, 10.0, 0.1),
    "MountainCarContinuous-v0": (0.99, -20.0, 110.0, 1.0),
    "CartPole-v1": (0.99, 0.0, 110.0, 1.0),
    "Acrobot-v1": (0.99, -110.0, 10.0, 1.0),
    **{f"{game}-MinAtar": (0.99, 0.0, 50.0, 1.0) for game in ("Breakout", "Freeway", "Seaquest", "SpaceInvaders")},
    "Asterix-MinAtar": (0.99, 0.0, 20.0, 1.0),
}


def split(env_id: str) -> tuple[Family | None, str]:
    """(family, name) of ``env_id``; (None, env_id) for a Playground id (no prefix). An unknown prefix raises."""
    prefix, sep, name = env_id.partition(":")
    if not sep:
        return None, env_id
    if prefix not in FAMILIES:
        raise UnknownEnvError(f"env {env_id!r} has an unknown family {prefix!r}; allowed: {', '.join(FAMILIES)}, or a "
                         "MuJoCo Playground id without a prefix")  # fmt: skip
    if not name:
        raise UnknownEnvError(f"env {env_id!r} names no env after {prefix + ':'!r}")
    return FAMILIES[prefix], name


def require(family: Family, env_id: str):
    """Import the family's package, or raise :class:`MissingExtraError` with the install line."""
    try:
        return importlib.import_module(family.module)
    except ImportError as exc:
        raise MissingExtraError(
            f"env {env_id!r} needs the {family.prefix} extra ({exc.name or family.module} is not installed): "
            f'pip install "reppo[{family.extra}]"'
        ) from exc


def _mujoco_task(name: str) -> str | None:
    base = name.split("-")[0]
    return base if base in MUJOCO_TASKS else None


def _brax_like(name: str, episode_length: int):
    from reppo.envs import TaskDefaults

    v_max = 200.0 if name.lower().startswith("humanoid") else 150.0
    return TaskDefaults(0.99, 0.0, v_max, False, episode_length, reward_scale=0.1)


def defaults(env_id: str):
    """:class:`reppo.envs.TaskDefaults` of a family id (see the module's doc for the sources)."""
    from reppo.envs import TaskDefaults

    if env_id.startswith(CUSTOM + ":"):
        return TaskDefaults(0.99, -100.0, 100.0, False, 1000)
    family, name = split(env_id)
    require(family, env_id)
    if family.prefix == "brax":
        return _brax_like(name, 1000)
    if family.prefix == "gymnax":
        from reppo.envs.gymnax import episode_length

        gamma, v_min, v_max, scale = GYMNAX_PRESETS.get(name, (0.99, -100.0, 100.0, 1.0))
        return TaskDefaults(gamma, v_min, v_max, False, episode_length(name), reward_scale=scale)
    if family.prefix == "maniskill":
        from reppo.envs.maniskill import episode_length

        steps = episode_length(name)
        return TaskDefaults(1.0 - 10.0 / steps, -15.0, 15.0, False, steps)
    if family.prefix == "envpool":
        from reppo.envs.envpool import defaults as envpool_defaults

        return envpool_defaults(name)
    from reppo.envs.gymnasium import registered_time_limit

    steps = registered_time_limit(name)
    if _mujoco_task(name):
        return _brax_like(name, steps)
    return TaskDefaults(0.99, -100.0, 100.0, False, steps)


def make(env_id: str, num_envs: int, *, episode_length: int | None = None, randomize_steps: bool = True):
    """``num_envs`` copies of a family id: a :class:`reppo.envs.base.HostVecEnv` for the host families, a JAX
    :class:`reppo.envs.base.VecEnv` for Brax and gymnax. ``randomize_steps=False`` asks for an evaluation env: a
    host family's is then seeded at every reset."""
    if env_id.startswith(CUSTOM + ":"):
        raise EnvLoadError(f"env {env_id!r} was an env object: pass it again (reppo.train / resume(..., env=...))")
    family, name = split(env_id)
    require(family, env_id)
    if family.prefix == "gymnasium":
        from reppo.envs.gymnasium import make_gymnasium

        return make_gymnasium(name, num_envs, episode_length, reseed=not randomize_steps)
    if family.prefix == "envpool":
        from reppo.envs.envpool import make_envpool

        return make_envpool(name, num_envs, episode_length, reseed=not randomize_steps)
    if family.prefix == "maniskill":
        from reppo.envs.maniskill import make_maniskill

        return make_maniskill(name, num_envs, episode_length, reseed=not randomize_steps)
    from reppo.envs.playground import AutoResetVecEnv

    if family.prefix == "brax":
        from reppo.envs.brax import load_brax

        env, default_length = load_brax(name), 1000
    else:
        from reppo.envs.gymnax import GymnaxEnv
        from reppo.envs.gymnax import episode_length as gymnax_length

        env, default_length = GymnaxEnv(name), gymnax_length(name)
    return AutoResetVecEnv(env, num_envs, episode_length or default_length, randomize_steps=randomize_steps,
                           name=env_id)  # fmt: skip
