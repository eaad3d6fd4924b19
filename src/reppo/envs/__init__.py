"""Environments: ``make_env(env_id, num_envs)`` -> :class:`VecEnv`, task presets and the env registry.

Ids are MuJoCo Playground's registered ids (DM Control suite, locomotion, manipulation) plus
``ToyAsymmetric`` (:mod:`reppo.envs.toy`), or ``FAMILY:NAME`` for the other families (``gymnasium:``,
``envpool:``, ``maniskill:``, ``brax:``, ``gymnax:``; :mod:`reppo.envs.families`). MuJoCo Playground is imported
lazily (it takes seconds), on the first call that needs it.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

from reppo.envs.base import EnvState, HostVecEnv, StepResult, VecEnv
from reppo.envs.playground import (
    IMPLS,
    RESET_STRATEGIES,
    AutoResetVecEnv,
    EnvLoadError,
    UnknownEnvError,
    validate_impl,
)
from reppo.envs.toy import ENV_ID as TOY_ENV_ID

__all__ = [
    "IMPLS",
    "TASK_PRESETS",
    "RESET_STRATEGIES",
    "AutoResetVecEnv",
    "EnvLoadError",
    "EnvState",
    "HostVecEnv",
    "StepResult",
    "TaskDefaults",
    "UnknownEnvError",
    "VecEnv",
    "available_envs",
    "make_env",
    "task_defaults",
]

# Playground tasks whose observation is a dict with a "privileged_state" entry (checked: playground 0.2.0).
_PRIVILEGED = (
    "ApolloJoystick",
    "BerkeleyHumanoidJoystick",
    "G1Joystick",
    "T1Joystick",
    "Go1",
    "SpotFlatTerrainJoystick",
    "LeapCube",
    "AeroCube",
)


@dataclass(frozen=True)
class TaskDefaults:
    """Per-task algorithm presets."""

    gamma: float
    """Discount factor."""
    v_min: float
    """Lower end of the critic's categorical value range."""
    v_max: float
    """Upper end of the critic's categorical value range."""
    asymmetric: bool
    """Whether the env provides privileged critic observations (critic_obs != obs)."""
    episode_length: int
    """Time limit in agent steps (Playground's ``episode_length`` divided by its ``action_repeat``)."""
    reward_scale: float = 1.0
    """Multiplies the rewards the learner sees (not evaluation returns): 0.1 for Brax-like tasks (paper)."""
    critic_width: int | None = None
    """Critic hidden width the task asks for; None: the run preset's width (``reppo.config.PRESET_CRITIC_WIDTH``)."""


# Task presets of the locomotion and manipulation tasks: (gamma, v_min, v_max, critic_width or None), with sources.
# README "Task presets" shows the same table (tests/test_config.py checks that both agree).
#
# G1 and T1 joystick (the paper's humanoid tasks): spec section 7 ("gamma 0.97, critic width 1024, value range
# [-10, 10], asymmetric (privileged) critic observations"), as in the authors' code (github.com/cvoelcker/reppo,
# main: config/experiment_overrides/mjx_humanoid_small_data.yaml gamma 0.97, critic_hidden_dim 1024;
# config/env/mjx_humanoid.yaml vmin -10, vmax 10, asymmetric_obs true).
#
# The other tasks are not in the paper; nothing here was tuned. gamma is Playground's own tuned Brax PPO
# `discounting` (mujoco_playground/config/locomotion_params.py, manipulation_params.py: brax_ppo_config). The
# value range is [-10, 10] (the authors' humanoid range) where a bound on the discounted return derived from
# the task's reward code fits in it, else that bound, rounded out:
# - locomotion: every reward is a sum of scaled terms times ctrl_dt = 0.02; positive scales sum to at most 9.25
#   (H1JoystickGaitTracking), so |V| <= 9.25 * 0.02 / 0.03 = 6.2 (negative terms are smaller or clipped at 0).
# - AlohaHandOver: progress reward, at most 1 per episode plus 0.02 per step: V <= 1.7.
# - AlohaSinglePegInsertion: reward in [0, 1] per physics step (normalised by the sum of its scales), 2 per agent
#   step (action_repeat 2): V <= 2 / 0.03 = 67.
# - PandaPickCube, PandaPickCubeOrientation, PandaOpenCabinet: terms in [0, 1] with scales summing to 12.55, 150
#   steps: V <= 12.55 * (1 - 0.97**150) / 0.03 = 415.
# - PandaPickCubeCartesian: progress reward, at most the best total (8 + 4 + 0.25 + 0.5 lifted + 2 success).
# - PandaRobotiqPushCube: (normalised terms <= 1 + success_wait 3) * ctrl_dt 0.005 * action_repeat 4 = 0.08 per
#   agent step over 1 - 0.994, plus 500 * 0.005 per success (at most one per 30 physics steps): V <= 66.
# - LeapCubeReorient: dense terms * 0.05 <= 0.28 per step, +100 per success, -5 on termination; [-10, 1000]
#   holds a success every 10 steps (100 / (1 - 0.99**10) = 1050 is just above it).
# - LeapCubeRotateZAxis, AeroCubeRotateZAxis: the cube's z angular velocity (rad/s) * 0.05, unbounded; 20 holds
#   a sustained 12 rad/s. Aero's action-rate cost reaches about -0.3 per step under a random policy: V >= -9.
# `train/clipped_target_frac` (TensorBoard, metrics.csv) shows how often a target falls outside the range.
_HUMANOID = (0.97, -10.0, 10.0, 1024)
_LOCOMOTION = (0.97, -10.0, 10.0, None)
TASK_PRESETS: dict[str, tuple[float, float, float, int | None]] = {
    "G1JoystickFlatTerrain": _HUMANOID,
    "G1JoystickRoughTerrain": _HUMANOID,
    "T1JoystickFlatTerrain": _HUMANOID,
    "T1JoystickRoughTerrain": _HUMANOID,
    **{
        task: _LOCOMOTION
        for task in (
            "ApolloJoystickFlatTerrain", "BarkourJoystick", "BerkeleyHumanoidJoystickFlatTerrain",
            "BerkeleyHumanoidJoystickRoughTerrain", "Go1JoystickFlatTerrain", "Go1JoystickRoughTerrain", "Go1Getup",
            "Go1Handstand", "Go1Footstand", "H1InplaceGaitTracking", "H1JoystickGaitTracking", "Op3Joystick",
            "SpotFlatTerrainJoystick", "SpotGetup", "SpotJoystickGaitTracking",
        )
    },
    "AlohaHandOver": (0.97, -10.0, 10.0, None),
    "AlohaSinglePegInsertion": (0.97, 0.0, 70.0, None),
    "PandaPickCube": (0.97, 0.0, 420.0, None),
    "PandaPickCubeOrientation": (0.97, 0.0, 420.0, None),
    "PandaPickCubeCartesian": (0.97, 0.0, 15.0, None),
    "PandaOpenCabinet": (0.97, 0.0, 420.0, None),
    "PandaRobotiqPushCube": (0.994, -10.0, 70.0, None),
    "LeapCubeReorient": (0.99, -10.0, 1000.0, None),
    "LeapCubeRotateZAxis": (0.97, -10.0, 20.0, None),
    "AeroCubeRotateZAxis": (0.97, -20.0, 20.0, None),
}  # fmt: skip


def _suites() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    from mujoco_playground._src import dm_control_suite, locomotion, manipulation

    return tuple(dm_control_suite.ALL_ENVS), tuple(locomotion.ALL_ENVS), tuple(manipulation.ALL_ENVS)


def available_envs() -> list[str]:
    """All env ids ``make_env`` accepts, sorted."""
    dmc, loco, manip = _suites()
    return sorted({*dmc, *loco, *manip, TOY_ENV_ID})


def _check_id(env_id: str) -> None:
    ids = available_envs()
    if env_id in ids:
        return
    low = env_id.lower()
    by_ratio = difflib.get_close_matches(low, [i.lower() for i in ids], n=5, cutoff=0.7)
    lower_to_id = {i.lower(): i for i in ids}
    matches = [lower_to_id[m] for m in by_ratio]
    matches += [i for i in ids if low and i.lower().startswith(low) and i not in matches]
    hint = f"; did you mean: {', '.join(matches[:5])}?" if matches else ""
    raise UnknownEnvError(f"unknown env {env_id!r}{hint} (see available_envs())")


def _agent_steps(episode_length: int, action_repeat: int) -> int:
    return math.ceil(int(episode_length) / max(int(action_repeat), 1))


def task_defaults(env_id: str) -> TaskDefaults:
    """Presets for ``env_id``: DM Control as in the paper (gamma 0.99, values in [0, 150]); locomotion and
    manipulation from :data:`TASK_PRESETS` (the paper's humanoid settings on G1/T1, documented values elsewhere);
    the critic sees the privileged state wherever the task provides one. A locomotion or manipulation task that
    this Playground version adds and the table lacks gets the locomotion values.
    Ids of the other families: :func:`reppo.envs.families.defaults`."""
    if ":" in env_id:
        from reppo.envs import families

        return families.defaults(env_id)
    if env_id == TOY_ENV_ID:
        from reppo.envs.toy import default_config

        cfg = default_config()
        return TaskDefaults(0.99, 0.0, 150.0, True, _agent_steps(cfg["episode_length"], cfg["action_repeat"]))
    _check_id(env_id)
    from mujoco_playground import registry

    dmc, _, _ = _suites()
    cfg = registry.get_default_config(env_id)
    ep = _agent_steps(cfg.episode_length, cfg.get("action_repeat", 1))
    if env_id in dmc:
        return TaskDefaults(gamma=0.99, v_min=0.0, v_max=150.0, asymmetric=False, episode_length=ep)
    gamma, v_min, v_max, width = TASK_PRESETS.get(env_id, _LOCOMOTION)
    asym = env_id.startswith(_PRIVILEGED)
    return TaskDefaults(gamma, v_min, v_max, asymmetric=asym, episode_length=ep, critic_width=width)


def _load_single(env_id: str, impl: str, config_overrides: dict[str, Any] | None) -> tuple[Any, Any]:
    """One (unbatched) env of ``env_id`` and its task config: the toy env, or a MuJoCo Playground task (its id
    checked first: UnknownEnvError)."""
    if env_id == TOY_ENV_ID:
        from reppo.envs.toy import ToyAsymmetric

        env = ToyAsymmetric(config_overrides=config_overrides)
        return env, env._config
    _check_id(env_id)
    from reppo.envs.playground import load_playground

    return load_playground(env_id, impl, config_overrides)


def make_env(
    env_id: str,
    num_envs: int,
    *,
    impl: str = "jax",
    episode_length: int | None = None,
    randomize_steps: bool = True,
    reset_pool_size: int | None = None,
    reset_strategy: str = "pool",
    reset_chunk_size: int | None = None,
    config_overrides: dict[str, Any] | None = None,
) -> VecEnv | HostVecEnv:
    """Build ``num_envs`` auto-resetting copies of ``env_id``.

    Args:
        env_id: a registered id (see :func:`available_envs`).
        num_envs: batch size.
        impl: MuJoCo physics backend, ``"jax"`` (default; several times faster than warp on CPU) or
            ``"warp"``.
        episode_length: time limit in agent steps; default from the task config (1000 for DM Control).
        randomize_steps: spread initial step counters over [0, episode_length) (training); False for
            evaluation.
        reset_pool_size: ready reset states kept between rollouts (see :class:`AutoResetVecEnv`).
        reset_strategy: ``"pool"`` (default), ``"direct"`` or ``"naive"`` (benchmarks only).
        reset_chunk_size: resets per vmapped batch when refreshing the pool (default 8 on CPU, else the
            pool size).
        config_overrides: extra overrides of the task config (Playground's flattened-dict form).

    Raises:
        UnknownEnvError: ``env_id`` is not registered (the message lists close matches).
        EnvLoadError: the task could not be built, e.g. its MuJoCo Menagerie robot models are not installed.
        ValueError: a bad ``impl`` or other argument.
        MissingExtraError: the family of a ``FAMILY:NAME`` id is not installed (the message says what to install).
    """
    validate_impl(impl)
    if ":" in env_id:  # another family: a HostVecEnv (Gymnasium, EnvPool, ManiSkill) or a JAX VecEnv (Brax, gymnax)
        from reppo.envs import families

        return families.make(env_id, num_envs, episode_length=episode_length, randomize_steps=randomize_steps)
    env, cfg = _load_single(env_id, impl, config_overrides)
    action_repeat = int(cfg.get("action_repeat", 1) or 1)
    if episode_length is None:
        episode_length = _agent_steps(cfg["episode_length"], action_repeat)
    return AutoResetVecEnv(
        env,
        num_envs,
        episode_length,
        action_repeat=action_repeat,
        randomize_steps=randomize_steps,
        reset_pool_size=reset_pool_size,
        reset_strategy=reset_strategy,
        reset_chunk_size=reset_chunk_size,
        name=env_id,
    )
