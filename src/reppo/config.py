"""Hyperparameters of a REPPO run, the named presets and their validation."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

CONFIG_FILE = "config.yaml"
"""The resolved Config of a run, in its run folder."""

PresetName = Literal["cpu", "paper-small", "paper-medium", "paper-large", "minatar"]


class ConfigError(ValueError):
    """A config value is out of range; the message is one line naming the field, the value and what is allowed."""


@dataclass(frozen=True)
class Config:
    """One REPPO training run. Every field is a CLI flag of `reppo train` (underscores become hyphens)."""

    # --- run ---
    env: str = "CartpoleBalance"
    """MuJoCo Playground task id (DM Control suite, locomotion, manipulation) or ToyAsymmetric, or FAMILY:NAME of
    another family: gymnasium:HalfCheetah-v5, envpool:T1JoystickFlatTerrain-v1, maniskill:PickCube-v1, brax:ant,
    gymnax:Pendulum-v1 (each an optional extra)."""
    preset: PresetName = "cpu"
    """Named hyperparameter set applied before any other flag: cpu (2-core machine), the paper's settings, or
    minatar (MinAtar games on a CPU)."""
    seed: int = 1
    """PRNG seed; the whole run is a deterministic function of it."""
    num_seeds: int = 1
    """Independent seeds trained at once in one compiled program (seed, seed + 1, ...); networks, optimisers and
    statistics are vmapped, the envs of all seeds form one batch of num_seeds * num_envs."""
    devices: int | Literal["all"] = 1
    """Devices to split the envs and each minibatch over (a 1-D jax.sharding mesh): a count, or "all" (every
    device of every process). Parameters are replicated and gradients averaged over devices; the result equals the
    one-device run up to floating-point summation order. num_envs * num_seeds must be divisible by it."""
    total_steps: int = 2_500_000
    """Training budget in environment steps (rounded up to whole iterations)."""
    impl: Literal["jax", "warp"] = "jax"
    """MJX physics backend. 'jax' is several times faster on CPU than Playground's default 'warp'."""

    # --- data collection ---
    num_envs: int = 512
    """N: parallel training environments."""
    num_steps: int = 16
    """T: rollout length per environment and iteration."""
    num_epochs: int = 4
    """E: passes over each iteration's batch."""
    num_minibatches: int = 8
    """M: minibatches per epoch; must divide num_envs * num_steps."""

    # --- returns and critic ---
    gamma: float | None = None
    """Discount; None takes the task preset (0.99 DM Control, 0.97 locomotion, per task for manipulation)."""
    lam: float = 0.95
    """TD(lambda) parameter."""
    reward_scale: float | None = None
    """Multiplies the rewards the learner sees (evaluation returns are never scaled); None takes the task preset
    (1; 0.1 for Brax and Gymnasium MuJoCo tasks, the paper's Brax setting)."""
    v_min: float | None = None
    """Lower end of the critic's value range; None takes the task preset."""
    v_max: float | None = None
    """Upper end of the critic's value range; None takes the task preset."""
    num_bins: int = 151
    """K_b: HL-Gauss bins."""
    hl_gauss_sigma: float = 0.75
    """HL-Gauss smoothing sigma as a fraction of the bin width."""
    num_value_samples: int = 4
    """K: policy samples per state for the soft value estimate V(x) in the TD(lambda) targets (continuous actions;
    with discrete actions V(x) is an exact sum over the actions)."""
    value_chunk_size: int = 65536
    """Rows (states x K samples) evaluated at once when estimating V; bounds the memory of the target step."""
    aux_coef: float = 1.0
    """Weight of the auxiliary reward / next-embedding prediction loss."""

    # --- networks and optimisation ---
    critic_width: int | None = None
    """Hidden width of the critic; None takes the task preset (1024 on the G1/T1 humanoid joystick tasks, as in
    the paper), else the preset's width (128 cpu, 256 minatar, 512 paper presets)."""
    encoder: Literal["auto", "mlp", "cnn"] = "auto"
    """How the networks read an image observation (a 3-D Box: MinAtar grids, stacked Atari frames): "cnn", a
    convolutional encoder per network (nets.ConvEncoder); "mlp", the flattened pixels; "auto", cnn for an image
    and mlp for anything else."""
    critic_depth: int = 2
    """Normalised blocks in the critic encoder (each head adds one more)."""
    actor_width: int = 128
    """Hidden width of the actor."""
    actor_depth: int = 3
    """Normalised blocks in the actor."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-3
    """Adam learning rate of the critic (the cpu preset's few updates per iteration need a fast critic)."""
    dual_lr: float = 3e-3
    """Adam learning rate of log alpha and log beta (own optimiser, no clipping)."""
    lr_decay_steps: int = 0
    """Env steps (rounded up to whole iterations) over which the actor and critic learning rates fall linearly to
    zero, one decrement per minibatch step, and stay zero after (the authors' anneal_lr); 0 keeps them constant.
    Usually set to total_steps. It is a field of its own so that a run stays a prefix of a longer one and resumes
    exactly; the dual learning rate stays constant."""
    max_grad_norm: float = 0.5
    """Global-norm gradient clip of actor and critic."""
    min_std: float = 1e-3
    """Added to the policy's exp(log_std)."""
    init_std: float = 1.0
    """Pre-tanh policy std at initialisation (before any update)."""

    # --- trust region and entropy ---
    kl_bound: float = 0.1
    """eps_KL: per-state forward KL above which the actor minimises beta * KL instead of the soft Q objective."""
    num_kl_samples: int = 4
    """S: samples from pi_old per state for the KL estimate."""
    entropy_coef: float = 0.5
    """c_H: target entropy is -c_H * action_dim (continuous), c_H * log(num_actions) (discrete; docs/discrete.md)."""
    init_alpha: float = 0.01
    """Initial entropy temperature."""
    init_beta: float = 0.01
    """Initial KL multiplier."""

    # --- evaluation and logging ---
    eval_every: int = 250_000
    """Evaluate every this many env steps (and at the end)."""
    eval_envs: int = 16
    """Parallel evaluation episodes (deterministic policy, whole episodes)."""
    run_dir: str | None = None
    """Run folder; default runs/<env>__<preset>__<seed>__<time>."""
    progress: bool = True
    """Show the live progress display."""
    checkpoint_every: int = 50
    """Write a checkpoint every this many iterations (0: only at the end and on Ctrl-C); the last 3 are kept."""
    track: bool = False
    """Also log to Weights & Biases (WANDB_MODE=offline works without network)."""
    wandb_project: str = "reppo"
    """W&B project used with --track."""
    video: bool = False
    """Record an episode of the deterministic policy (seed index 0) as an MP4 at every evaluation."""

    # --- robustness ---
    max_bad_iterations: int = 3
    """Consecutive iterations rolled back for non-finite observations, rewards, losses or parameters before the run
    stops (with a checkpoint of the last good state); 0 disables the NaN/Inf guard."""

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_iterations(self) -> int:
        return math.ceil(self.total_steps / self.batch_size)

    @property
    def lr_decay_iterations(self) -> int:
        """Iterations over which the learning rates fall to 0 (0: no decay)."""
        return math.ceil(self.lr_decay_steps / self.batch_size)


# Spec section 7 (paper): N = 1024 envs, minibatch 2048, 8 epochs, widths 512, Adam 3e-4, 50M steps.
_PAPER: dict[str, object] = dict(
    num_envs=1024, num_epochs=8, actor_width=512, num_value_samples=64,
    critic_lr=3e-4, dual_lr=3e-4, eval_every=1_000_000, total_steps=50_000_000, value_chunk_size=16_384,
)  # fmt: skip
# value_chunk_size: with K = 64 and width 512 a chunk of 65,536 rows holds 128 MiB per hidden activation, the largest
# buffer of a paper-small iteration. 16,384 rows (256 states), with the update's per-minibatch gather, cut the
# iteration's XLA temporaries from 410 to 244 MiB (CPU memory analysis; docs/BENCHMARKS.md, "Peak memory").

# MinAtar on a 2-core CPU (docs/BENCHMARKS.md, "MinAtar against rejax PPO and PQN"): PPO's rollout shape
# (gymnax-blines, 64 x 128), wider MLPs on the flattened grid (the CNN is ten times slower on a CPU), 8 epochs, a
# faster actor, and the actor and critic learning rates decayed to 0 over the default budget (123 iterations).
_MINATAR: dict[str, object] = dict(
    num_envs=64, num_steps=128, num_epochs=8, actor_width=256, encoder="mlp", actor_lr=1e-3,
    total_steps=1_007_616, lr_decay_steps=1_007_616, eval_every=251_904, eval_envs=32,
)  # fmt: skip

PRESETS: dict[str, dict[str, object]] = {
    # The Config defaults: sized for a 2-core CPU (CartpoleBalance reaches 800 in a few minutes).
    "cpu": {},
    "paper-small": {**_PAPER, "num_steps": 32, "num_minibatches": 16},
    "paper-medium": {**_PAPER, "num_steps": 64, "num_minibatches": 32},
    "paper-large": {**_PAPER, "num_steps": 128, "num_minibatches": 64},
    "minatar": _MINATAR,
}


# The critic width of each preset where the task has no width of its own (resolve); it is not a preset value, so
# that a task preset (TaskDefaults.critic_width) can tell it from a width the user gave.
PRESET_CRITIC_WIDTH: dict[str, int] = {
    "cpu": 128, "paper-small": 512, "paper-medium": 512, "paper-large": 512, "minatar": 256,
}  # fmt: skip


def preset_config(name: str, **overrides) -> Config:
    """The Config of a named preset, with ``overrides`` applied on top."""
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is not a preset; allowed: {', '.join(PRESETS)}")
    return Config(preset=name, **{**PRESETS[name], **overrides})


CONTINUOUS_ONLY = ("min_std", "init_std", "num_kl_samples", "num_value_samples")
"""Fields of the tanh-Gaussian policy; with discrete actions every expectation is an exact sum (docs/discrete.md)."""


def check_action_space(c: Config, num_actions: int) -> None:
    """On an env with ``num_actions`` > 0 discrete actions, a continuous-only field that differs from its preset's
    value was set by the user and would have no effect: a one-line ConfigError, raised before anything is written."""
    if not num_actions:
        return
    preset = preset_config(c.preset)  # validate() has checked the name
    changed = [f"{f}={getattr(c, f)!r}" for f in CONTINUOUS_ONLY if getattr(c, f) != getattr(preset, f)]
    if changed:
        raise ConfigError(
            f"{', '.join(changed)}: {c.env!r} has {num_actions} discrete actions, and these settings apply to "
            f"continuous actions only; allowed: leave {', '.join(CONTINUOUS_ONLY)} unset"
        )


def check_encoder(c: Config, image: Any) -> None:
    """``encoder="cnn"`` on an env whose observation is not an image (``image`` None): a one-line ConfigError."""
    if c.encoder == "cnn" and image is None:
        raise ConfigError(
            f"encoder='cnn': {c.env!r} has no image observation (a 3-D Box, seen by actor and critic alike); "
            "allowed: 'auto' or 'mlp'"
        )


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(hint))
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    name = " or ".join(_type_name(a) for a in args) if args else getattr(hint, "__name__", str(hint))
    return name + (" or None" if type(None) in typing.get_args(hint) else "")


def _has_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the field annotation ``hint`` (bool is not an int; an int is a valid float)."""
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is Literal:
        return value in typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in typing.get_args(hint))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_types(config: Config) -> None:
    """Raise ConfigError for the first field whose value has the wrong type."""
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not _has_type(value, hints[f.name]):
            problem = "is not allowed" if "one of" in _type_name(hints[f.name]) else "has the wrong type"
            raise ConfigError(f"{f.name}={value!r} {problem}; allowed: {_type_name(hints[f.name])}")


_POSITIVE_INTS = (
    "total_steps",
    "num_envs",
    "num_steps",
    "num_epochs",
    "num_minibatches",
    "num_value_samples",
    "num_kl_samples",
    "actor_width",
    "critic_depth",
    "actor_depth",
    "eval_every",
    "eval_envs",
    "value_chunk_size",
    "num_seeds",
)
"""Fields that must be integers > 0 (:func:`validate`)."""
_NON_NEGATIVE_INTS = ("checkpoint_every", "max_bad_iterations", "lr_decay_steps")
"""Fields that must be integers >= 0 (:func:`validate`)."""
_POSITIVE_FLOATS = (
    "actor_lr",
    "critic_lr",
    "dual_lr",
    "max_grad_norm",
    "kl_bound",
    "init_alpha",
    "init_beta",
    "hl_gauss_sigma",
    "init_std",
)
"""Fields that must be finite numbers > 0 (:func:`validate`)."""
_NON_NEGATIVE_FLOATS = ("aux_coef", "min_std", "entropy_coef")
"""Fields that must be finite numbers >= 0 (:func:`validate`)."""


def _is_int(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_names(c: Config) -> None:
    """The preset and the physics backend, checked before the types so that a bad one gets its own message."""
    _require(
        isinstance(c.preset, str) and c.preset in PRESETS,
        f"preset={c.preset!r} is not a preset; allowed: {', '.join(PRESETS)}",
    )
    _require(
        isinstance(c.impl, str) and c.impl in ("jax", "warp"), f"impl={c.impl!r} is not allowed; allowed: jax, warp"
    )


def _check_integers(c: Config) -> None:
    """Counts, sizes and periods, and that the minibatches divide the batch."""
    for name in _POSITIVE_INTS:
        value = getattr(c, name)
        _require(_is_int(value) and value > 0, f"{name}={value!r} must be a positive integer")
    _require(
        c.critic_width is None or (_is_int(c.critic_width) and c.critic_width > 0),
        f"critic_width={c.critic_width!r} must be a positive integer (or None: the task preset)",
    )
    for name in _NON_NEGATIVE_INTS:
        value = getattr(c, name)
        _require(_is_int(value) and value >= 0, f"{name}={value!r} must be an integer >= 0")
    _require(
        c.devices == "all" or (_is_int(c.devices) and c.devices >= 1),
        f"devices={c.devices!r} must be a positive integer or 'all'",
    )
    _require(c.num_bins >= 3, f"num_bins={c.num_bins} must be at least 3")
    _require(
        c.batch_size % c.num_minibatches == 0,
        f"num_minibatches={c.num_minibatches} must divide num_envs * num_steps = {c.batch_size}",
    )


def _check_numbers(c: Config) -> None:
    """Learning rates, coefficients, standard deviations, lambda, and the task presets where the config sets them."""
    for name in _POSITIVE_FLOATS:
        value = getattr(c, name)
        _require(math.isfinite(value) and value > 0, f"{name}={value!r} must be a finite number > 0")
    for name in _NON_NEGATIVE_FLOATS:
        value = getattr(c, name)
        _require(math.isfinite(value) and value >= 0, f"{name}={value!r} must be a finite number >= 0")
    _require(c.init_std > c.min_std, f"init_std={c.init_std} must exceed min_std={c.min_std}")
    _require(0.0 <= c.lam <= 1.0, f"lam={c.lam} must be in [0, 1]")
    if c.reward_scale is not None:
        _require(math.isfinite(c.reward_scale) and c.reward_scale > 0,
                 f"reward_scale={c.reward_scale!r} must be a finite number > 0")  # fmt: skip
    if c.gamma is not None:
        _require(0.0 < c.gamma <= 1.0, f"gamma={c.gamma} must be in (0, 1]")
    if c.v_min is not None and c.v_max is not None:
        _require(c.v_min < c.v_max, f"v_min={c.v_min} must be below v_max={c.v_max}")


def validate(config: Config) -> None:
    """Raise ConfigError (one line) for the first value that is out of range. Runs before anything compiles."""
    _check_names(config)
    check_types(config)
    _check_integers(config)
    _check_numbers(config)


def resolve(config: Config) -> Config:
    """Validate and fill the task presets (gamma, v_min, v_max, critic_width) from the env; a value the config
    already holds is kept. Raises ConfigError or UnknownEnvError."""
    from reppo.envs import task_defaults

    validate(config)
    task = task_defaults(config.env)
    width = task.critic_width or PRESET_CRITIC_WIDTH[config.preset]
    resolved = dataclasses.replace(
        config,
        gamma=task.gamma if config.gamma is None else config.gamma,
        v_min=task.v_min if config.v_min is None else config.v_min,
        v_max=task.v_max if config.v_max is None else config.v_max,
        reward_scale=task.reward_scale if config.reward_scale is None else config.reward_scale,
        critic_width=width if config.critic_width is None else config.critic_width,
    )
    validate(resolved)
    return resolved


def load_config(run_dir) -> Config:
    """The Config saved in a run folder (``RUN_DIR/config.yaml``)."""
    from pathlib import Path

    import yaml

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no {CONFIG_FILE}: not a reppo run folder")
    values = yaml.safe_load(path.read_text())
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path} has unknown fields {unknown}; written by another reppo version?")
    # Runs written before the CNN encoder existed flattened every observation into MLPs: keep resuming them so.
    values.setdefault("encoder", "mlp")
    return Config(**values)
