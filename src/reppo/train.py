"""The host loop of ``reppo train``: compile, run iterations, evaluate, log, show progress.

The loop never computes a loss: it calls the jitted ``iteration`` from ``reppo.algo.reppo.make_train`` once per
iteration, so a run's trajectory depends only on its config and seed, never on ``total_steps``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jax
import numpy as np
import yaml

from reppo.algo.reppo import TrainState, make_train
from reppo.config import Config, resolve
from reppo.envs import make_env
from reppo.evaluate import make_evaluate
from reppo.logging import RunLogger


@dataclass
class TrainResult:
    """What ``train`` returns."""

    state: TrainState
    """Final training state (parameters, optimiser states, dual variables, normaliser, env state, key)."""
    config: Config
    """The resolved config the run used."""
    run_dir: Path
    evaluations: list[dict[str, float]] = field(default_factory=list)
    """One entry per evaluation: env_steps, wall_s, eval/episode_return (mean), eval/episode_return_std."""
    compile_s: float = 0.0


def default_run_dir(config: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.env}__{config.preset}__{config.seed}__{stamp}"


def _prepare_run_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".write-test"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise OSError(f"run folder {path} is not writable: {exc.strerror}") from exc
    return path


class _Progress:
    """Live display: env steps, steps/s, latest eval return, ETA (rich)."""

    def __init__(self, enabled: bool, total_steps: int, description: str):
        self._progress = None
        if not enabled:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
            TextColumn("{task.fields[sps]:>8,.0f} steps/s"),
            TextColumn("eval {task.fields[eval]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self._task = self._progress.add_task(description, total=total_steps, sps=0.0, eval="-")
        self._progress.start()

    def update(self, steps: int, sps: float, eval_return: float | None = None) -> None:
        if self._progress is None:
            return
        fields: dict[str, Any] = {"sps": sps}
        if eval_return is not None:
            fields["eval"] = f"{eval_return:.1f}"
        self._progress.update(self._task, completed=steps, **fields)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _to_float_dict(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in metrics.items()}


def train(config: Config, run_dir: str | Path | None = None, echo=print) -> TrainResult:
    """Train REPPO as ``config`` says; write config.yaml, metrics.csv and TensorBoard events into the run folder.

    Raises ConfigError / UnknownEnvError / EnvLoadError before anything compiles when the input is bad.
    """
    config = resolve(config)
    run_dir = Path(run_dir or config.run_dir or default_run_dir(config))
    env = make_env(config.env, config.num_envs, impl=config.impl)
    eval_env = make_env(config.env, config.eval_envs, impl=config.impl, randomize_steps=False)
    run_dir = _prepare_run_dir(run_dir)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
    echo(f"reppo: training {config.env} ({config.preset} preset, seed {config.seed}); logs in {run_dir}")

    init, iteration, algo = make_train(config, env)
    key_train, key_eval = jax.random.split(jax.random.PRNGKey(config.seed))
    evaluate = jax.jit(make_evaluate(algo.actor, eval_env, deterministic=True))
    iterate = jax.jit(iteration, donate_argnums=0)

    t0 = time.perf_counter()
    state = jax.jit(init)(key_train)
    state, metrics = iterate(state)
    jax.block_until_ready(metrics)
    first_eval = evaluate(state.actor_params, state.obs_stats, jax.random.fold_in(key_eval, 0))
    jax.block_until_ready(first_eval)
    compile_s = time.perf_counter() - t0
    echo(f"reppo: compiled in {compile_s:.1f} s (includes the first iteration)")

    logger = RunLogger(
        run_dir,
        columns=[
            "eval/episode_return",
            "eval/episode_return_std",
            "eval/episode_length",
            "perf/sps",
            *(f"train/{k}" for k in metrics),
        ],
    )
    progress = _Progress(config.progress, config.num_iterations * config.batch_size, config.env)
    result = TrainResult(state=state, config=config, run_dir=run_dir, compile_s=compile_s)
    pending: list[dict[str, Any]] = [metrics]
    next_eval = config.eval_every
    t_start = time.perf_counter()
    steps_at_start = config.batch_size  # the first iteration ran during compilation
    try:
        for i in range(1, config.num_iterations + 1):
            if i > 1:
                state, metrics = iterate(state)
                pending.append(metrics)
            env_steps = i * config.batch_size
            elapsed = time.perf_counter() - t_start
            sps = (env_steps - steps_at_start) / max(elapsed, 1e-9)
            if env_steps >= next_eval or i == config.num_iterations:
                next_eval = (env_steps // config.eval_every + 1) * config.eval_every
                out = evaluate(state.actor_params, state.obs_stats, jax.random.fold_in(key_eval, i))
                returns = np.asarray(out.returns)
                train_means = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
                pending = []
                row = {
                    "eval/episode_return": float(returns.mean()),
                    "eval/episode_return_std": float(returns.std()),
                    "eval/episode_length": float(np.mean(out.lengths)),
                    "perf/sps": sps,
                    **_to_float_dict(train_means, "train/"),
                }
                elapsed = time.perf_counter() - t_start
                logger.log(env_steps, i, elapsed, row)
                result.evaluations.append({"env_steps": env_steps, "wall_s": elapsed, **row})
                progress.update(env_steps, sps, row["eval/episode_return"])
            else:
                progress.update(env_steps, sps)
    finally:
        progress.close()
        logger.close()
    result.state = state
    final = result.evaluations[-1]["eval/episode_return"] if result.evaluations else float("nan")
    echo(
        f"reppo: done, final deterministic eval return {final:.1f}; logs in {run_dir} "
        f"(tensorboard --logdir {run_dir})"
    )
    return result
