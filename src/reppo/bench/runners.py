"""One benchmark run: one method, one task, one budget, its seeds; evaluation points reported as they come.

Methods and the settings they run with:

- ``reppo``: :func:`reppo.train` at the suite's preset; all seeds train in one compiled program (``num_seeds``).
- ``ppo``: ``brax.training.agents.ppo.train`` with ``mujoco_playground.config.dm_control_suite_params
  .brax_ppo_config(task)``, called as Playground's ``learning/train_jax_ppo.py`` calls it (env wrapped by
  ``wrapper.wrap_for_brax_training``, a separate eval env, the config's ``network_factory`` arguments).
- ``ppo_small``: the same Brax PPO with the published config's batch geometry replaced by REPPO's cpu one
  (:data:`reppo.bench.suites.PPO_SMALL_OVERRIDES`), so that it updates within a cpu budget.
- ``sac``: ``brax.training.agents.sac.train`` with ``brax_sac_config(task)``, likewise. Brax's SAC ``train``
  takes no ``num_resets_per_eval``; that key of the published config is dropped (recorded in the run's settings).

Only ``num_timesteps`` and ``num_evals`` of the published configs are set (from the budget, see the schedules
below; ``ppo_small`` also replaces its batch geometry); evaluation is Brax's deterministic one
(``deterministic_eval=True``, the published 128 eval episodes).
Every method steps the same Playground envs with the same MJX backend (``impl="jax"``). One Brax seed per
process: Brax trains one seed per call.

Budgets. No method trains past the budget: REPPO runs the whole iterations that fit; Brax runs the largest
schedule its ``num_timesteps``/``num_evals`` arithmetic allows within the budget. Published Brax PPO evaluates
every ``batch_size * num_minibatches * unroll_length * action_repeat * num_resets_per_eval`` env steps
(983,040 x 10 for DM Control); when the budget is shorter, the run is stopped after its initial evaluation and
its note says so.

Wall-clock (``wall_s``) excludes compilation and evaluation for every method. REPPO: ``wall_s - eval_s`` of
:class:`reppo.training.TrainResult` evaluations (the host loop compiles ahead of time, before its clock starts,
and times its evaluations). Brax: seconds since the initial evaluation minus the time inside JAX compilation
(tracing, lowering and XLA compilation or cache reads: the ``/jax/core/compile/*`` monitoring events) and inside
Brax's evaluations (``eval/epoch_eval_time``). Every method evaluates ``BRAX_EVAL_EPISODES`` (128) episodes: the
suites set REPPO's ``eval_envs`` to it. ``compile_s`` is the same for every method: the union of the compile
events during the run.

``jax.device_put_replicated`` left jax's namespace in jax 0.10 but is still in ``jax._src.api``; brax 0.14 calls
it, so the runner puts JAX's own function back under its old name before importing brax. Brax itself runs
unmodified.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reppo.bench.suites import EVAL_POINTS, PPO_SMALL_OVERRIDES

COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
"""JAX monitoring events whose time spans are compilation (nested spans are counted once)."""

IMPL = "jax"
"""MJX backend of every method's envs (REPPO's default; several times faster than warp on CPU)."""

Emit = Callable[[dict[str, Any]], None]


class RunError(ValueError):
    """The run cannot be set up as asked (for example a budget below the method's smallest step)."""


@dataclass(frozen=True)
class RunSpec:
    """What a worker runs: one method on one task for a budget, with the given seeds."""

    task: str
    method: str
    seeds: tuple[int, ...]
    """REPPO: consecutive seeds trained at once. Brax: exactly one seed."""
    budget: int
    """Env steps; no evaluation is past it."""
    folder: str
    """This run's folder (the worker writes its evaluations there; REPPO's run folder is ``folder/reppo``)."""
    points: int = EVAL_POINTS
    reppo_preset: str = "cpu"
    reppo_overrides: dict[str, Any] = field(default_factory=dict)
    """Config fields set on top of ``reppo_preset`` (the suite's, see :class:`reppo.bench.suites.Suite`)."""
    peer_overrides: dict[str, Any] = field(default_factory=dict)
    """Keys of a Brax peer's published config replaced before its schedule is made (empty in every suite; the GPU
    evidence kit's ``--tiny`` check shrinks published PPO with it to fit a CPU)."""

    @property
    def seed_label(self) -> str:
        return str(self.seeds[0]) if len(self.seeds) == 1 else f"{self.seeds[0]}-{self.seeds[-1]}"


# --------------------------------------------------------------------------------------------------------------
# Compile-free wall-clock


def union_length(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of ``intervals`` clipped to ``[lo, hi]``."""
    total, end = 0.0, lo
    for a, b in sorted(intervals):
        a, b = max(a, end), min(b, hi)
        if b > a:
            total += b - a
            end = b
    return total


class ExcludedTime:
    """Time spans that do not count as training: JAX compilation (recorded by a monitoring listener from creation
    until :meth:`close`) and whatever :meth:`exclude` adds (Brax's evaluations). Times are ``time.time()``, the
    clock JAX's events use."""

    def __init__(self) -> None:
        import jax

        self.compile: list[tuple[float, float]] = []
        self.other: list[tuple[float, float]] = []
        self._listener = self._on_span
        jax.monitoring.register_event_time_span_listener(self._listener)

    def _on_span(self, event: str, start: float, end: float, **kwargs: Any) -> None:
        if event in COMPILE_EVENTS:
            self.compile.append((start, end))

    def exclude(self, start: float, end: float) -> None:
        self.other.append((start, end))

    def compile_seconds(self, lo: float, hi: float) -> float:
        return union_length(self.compile, lo, hi)

    def active_seconds(self, lo: float, hi: float) -> float:
        """Seconds in ``[lo, hi]`` outside every excluded span."""
        return (hi - lo) - union_length(self.compile + self.other, lo, hi)

    def close(self) -> None:
        import jax

        jax.monitoring.unregister_event_time_span_listener(self._listener)


def device_peak_bytes() -> int | None:
    """Peak bytes in use on the first accelerator (None on a CPU, whose backend keeps no allocator statistics)."""
    import jax

    device = jax.local_devices()[0]
    if device.platform == "cpu":
        return None
    stats = device.memory_stats() or {}
    return stats.get("peak_bytes_in_use")


# --------------------------------------------------------------------------------------------------------------
# REPPO


def reppo_config(spec: RunSpec):
    """The REPPO Config of a run: the preset, whole iterations within the budget, about ``points`` evaluations."""
    from reppo.config import preset_config

    base = preset_config(spec.reppo_preset, **spec.reppo_overrides)
    iterations = spec.budget // base.batch_size
    if iterations < 1:
        raise RunError(
            f"budget {spec.budget:,} is below one REPPO iteration of the {spec.reppo_preset} preset "
            f"({base.batch_size:,} env steps)"
        )
    return dataclasses.replace(
        base,
        env=spec.task,
        seed=spec.seeds[0],
        num_seeds=len(spec.seeds),
        total_steps=iterations * base.batch_size,
        eval_every=base.batch_size * math.ceil(iterations / spec.points),
        progress=False,
        checkpoint_every=0,
    )


def run_reppo(spec: RunSpec, emit: Emit) -> dict[str, Any]:
    """Train REPPO for ``spec``; emit one ``eval`` record per evaluation and seed; return the run's facts."""
    from reppo.training import train

    config = reppo_config(spec)
    clock = ExcludedTime()
    start = time.time()
    try:
        result = train(config, run_dir=Path(spec.folder) / "reppo", echo=lambda line: print(line, flush=True))
    finally:
        clock.close()
    for ev in result.evaluations:
        for seed, row in zip(spec.seeds, ev["per_seed"], strict=True):
            emit({"kind": "eval", "seed": seed, "env_steps": int(ev["env_steps"]),
                  "wall_s": float(ev["wall_s"]) - float(ev["eval_s"]),
                  "eval_return": float(row["eval/episode_return"])})  # fmt: skip
    return {
        "compile_s": clock.compile_seconds(start, time.time()),
        "settings": dataclasses.asdict(result.config),
        "note": "",
    }


# --------------------------------------------------------------------------------------------------------------
# Brax PPO and SAC


@dataclass(frozen=True)
class BraxSchedule:
    """How a Brax run is asked to train within a budget."""

    num_timesteps: int
    num_evals: int
    """Brax's ``num_evals``: the initial evaluation plus one after each of ``num_evals - 1`` training epochs."""
    eval_steps: tuple[int, ...]
    """Env steps of the evaluations that fall within the budget (0 first)."""
    note: str = ""

    @property
    def stops_early(self) -> bool:
        """Whether the library would train past the last in-budget evaluation (the run is stopped there)."""
        return self.num_timesteps > self.eval_steps[-1]


LIBRARY: dict[str, str] = {"ppo": "ppo", "ppo_small": "ppo", "sac": "sac"}
"""The Brax agent each peer method trains with."""
PEER_OVERRIDES: dict[str, dict[str, Any]] = {"ppo": {}, "ppo_small": PPO_SMALL_OVERRIDES, "sac": {}}
"""Keys of the published config each peer method replaces (only ``ppo_small`` replaces any)."""


def published_config(method: str, task: str) -> dict[str, Any]:
    """Playground's published Brax config for a DM Control task, as a plain dict (``method``: a Brax agent,
    ``ppo`` or ``sac``)."""
    from mujoco_playground.config import dm_control_suite_params

    make = {"ppo": dm_control_suite_params.brax_ppo_config, "sac": dm_control_suite_params.brax_sac_config}[method]
    return make(task).to_dict()


def peer_config(method: str, task: str) -> dict[str, Any]:
    """The config a peer method runs on ``task``: its agent's published config with ``PEER_OVERRIDES[method]``."""
    return {**published_config(LIBRARY[method], task), **PEER_OVERRIDES[method]}


def ppo_schedule(config: dict[str, Any], budget: int, points: int) -> BraxSchedule:
    """Brax PPO's schedule within ``budget``: ``k`` training epochs of ``unit`` env steps between evaluations."""
    per_update = config["batch_size"] * config["num_minibatches"] * config["unroll_length"] * config["action_repeat"]
    unit = per_update * max(config.get("num_resets_per_eval", 0), 1)
    evals = min(points, budget // unit)
    if evals == 0:
        first = "no update" if budget < per_update else "no evaluated update"
        return BraxSchedule(
            num_timesteps=unit,
            num_evals=2,
            eval_steps=(0,),
            note=(
                f"{first} within the budget: published Brax PPO updates every {per_update:,} env steps and "
                f"evaluates every {unit:,}; stopped after its initial evaluation"
            ),
        )
    epochs = budget // (evals * unit)
    step = epochs * unit
    return BraxSchedule(step * evals, evals + 1, tuple(step * e for e in range(evals + 1)))


def sac_schedule(config: dict[str, Any], budget: int, points: int) -> BraxSchedule:
    """Brax SAC's schedule within ``budget``: the replay prefill, then ``k`` actor steps between evaluations."""
    per_actor_step = config["num_envs"] * config["action_repeat"]
    prefill = -(-config["min_replay_size"] // config["num_envs"]) * per_actor_step
    evals = min(points, (budget - prefill) // per_actor_step)
    if evals < 1:
        raise RunError(
            f"budget {budget:,} is below Brax SAC's replay prefill plus one actor step "
            f"({prefill + per_actor_step:,} env steps)"
        )
    step = (budget - prefill) // (evals * per_actor_step) * per_actor_step
    return BraxSchedule(prefill + step * evals, evals + 1, (0, *(prefill + step * e for e in range(1, evals + 1))))


def brax_schedule(method: str, config: dict[str, Any], budget: int, points: int) -> BraxSchedule:
    return (ppo_schedule if method == "ppo" else sac_schedule)(config, budget, points)


def min_budget(method: str, task: str, reppo_preset: str, reppo_overrides: dict[str, Any]) -> int:
    """Smallest budget a method can run on ``task`` (REPPO: one iteration; SAC: prefill plus one actor step)."""
    if method == "reppo":
        from reppo.config import preset_config

        return preset_config(reppo_preset, **reppo_overrides).batch_size
    if method == "sac":
        config = published_config("sac", task)
        per_actor_step = config["num_envs"] * config["action_repeat"]
        return -(-config["min_replay_size"] // config["num_envs"]) * per_actor_step + per_actor_step
    return 1


class _BudgetReached(Exception):
    """Raised from Brax's progress callback to stop a run at its last evaluation within the budget."""


def _restore_device_put_replicated() -> None:
    import jax

    if not hasattr(jax, "device_put_replicated"):
        from jax._src import api

        jax.device_put_replicated = api.device_put_replicated


@dataclass(frozen=True)
class BraxCall:
    """A Brax ``train`` function, its keyword arguments (published config, schedule set) and the schedule."""

    train: Callable[..., Any]
    kwargs: dict[str, Any]
    schedule: BraxSchedule
    settings: dict[str, Any]
    """The hyperparameters as passed (JSON-friendly), and the published keys ``train`` does not take."""


def brax_call(method: str, task: str, budget: int, points: int, overrides: dict[str, Any] | None = None) -> BraxCall:
    """How to call peer ``method`` on ``task`` for ``budget`` env steps (``overrides``: keys of its config
    replaced)."""
    _restore_device_put_replicated()
    from mujoco_playground import wrapper

    library = LIBRARY[method]
    if library == "ppo":
        from brax.training.agents.ppo import networks
        from brax.training.agents.ppo import train as brax_train

        make_networks = networks.make_ppo_networks
    else:
        from brax.training.agents.sac import networks
        from brax.training.agents.sac import train as brax_train

        make_networks = networks.make_sac_networks
    config = {**peer_config(method, task), **(overrides or {})}
    schedule = brax_schedule(library, config, budget, points)
    network_args = config.pop("network_factory", {})
    accepted = inspect.signature(brax_train.train).parameters
    kwargs = {k: v for k, v in config.items() if k in accepted}
    kwargs.update(num_timesteps=schedule.num_timesteps, num_evals=schedule.num_evals, deterministic_eval=True)
    settings = {**kwargs, "network_factory": network_args, "dropped": sorted(set(config) - set(accepted))}
    kwargs.update(
        network_factory=functools.partial(make_networks, **network_args),
        wrap_env_fn=wrapper.wrap_for_brax_training,
    )
    return BraxCall(brax_train.train, kwargs, schedule, settings)


def run_brax(spec: RunSpec, emit: Emit) -> dict[str, Any]:
    """Train Brax PPO or SAC (one seed) for ``spec``; emit one ``eval`` record per evaluation."""
    from reppo.envs.playground import load_playground

    (seed,) = spec.seeds
    call = brax_call(spec.method, spec.task, spec.budget, spec.points, spec.peer_overrides)
    env, _ = load_playground(spec.task, IMPL)
    eval_env, _ = load_playground(spec.task, IMPL)
    clock = ExcludedTime()
    first: list[float] = []  # time of the initial evaluation: wall_s 0

    def progress(step: int, metrics: dict[str, Any]) -> None:
        now = time.time()
        clock.exclude(now - float(metrics.get("eval/epoch_eval_time", 0.0)), now)
        if not first:
            first.append(now)
        emit({"kind": "eval", "seed": seed, "env_steps": int(step), "wall_s": clock.active_seconds(first[0], now),
              "eval_return": float(metrics["eval/episode_reward"])})  # fmt: skip
        if call.schedule.stops_early and step >= call.schedule.eval_steps[-1]:
            raise _BudgetReached

    start = time.time()
    try:
        call.train(environment=env, eval_env=eval_env, progress_fn=progress, seed=seed, **call.kwargs)
    except _BudgetReached:
        pass
    finally:
        clock.close()
    return {"compile_s": clock.compile_seconds(start, time.time()), "settings": call.settings,
            "note": call.schedule.note}  # fmt: skip


RUNNERS: dict[str, Callable[[RunSpec, Emit], dict[str, Any]]] = {
    "reppo": run_reppo, "ppo": run_brax, "ppo_small": run_brax, "sac": run_brax,
}  # fmt: skip
