"""The host loop of ``reppo train``: compile, run iterations, evaluate, log, checkpoint, resume.

The loop never computes a loss: it calls the jitted ``iteration`` from ``reppo.algo.reppo.make_train`` once per
iteration. A run's trajectory depends only on its config and seed, never on ``total_steps``: evaluations fall
on a fixed schedule (every ``eval_every`` env steps) plus one final evaluation that does not touch the training
state, so a shorter run is an exact prefix of a longer one and a checkpoint can be resumed and extended.

With the NaN/Inf guard on (``max_bad_iterations > 0``) the loop reads each iteration's ``health/*`` flags (one
scalar per seed) and stops with :class:`TrainingDivergedError` after ``max_bad_iterations`` consecutive rolled-back
iterations of a seed, after checkpointing the state it holds (rolled back, hence the last good learner). The flags
of iteration i are read after iteration i + 1 has been dispatched, so the host never makes the device wait; at an
evaluation, a checkpoint, the last iteration or a Ctrl-C (where the loop waits anyway) they are read at once. A
divergence found one iteration late is reported at the iteration where it happened, and the checkpoint is that of
the next iteration (finite: rolled back again, or a normal update).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jax
import numpy as np
import yaml

from reppo import parallel
from reppo.algo.reppo import TrainState, make_train
from reppo.checkpoint import CHECKPOINT_DIR, MAX_TO_KEEP, Checkpointer
from reppo.config import CONFIG_FILE, Config, ConfigError, load_config, resolve
from reppo.envs import make_env
from reppo.evaluate import make_evaluate
from reppo.files import write_atomic
from reppo.logging import METRICS_FILE, RunLogger, mean_over_seeds, rewrite_metrics

WANDB_ID_FILE = "wandb-run-id"
# Flags that may change when a run is resumed: none of them changes the training trajectory.
RESUME_OVERRIDES = ("total_steps", "progress", "checkpoint_every", "track", "video", "devices")


class TrainingDivergedError(RuntimeError):
    """A seed had ``max_bad_iterations`` consecutive iterations rolled back for non-finite values; the message is
    one line naming the iteration, the failed checks, the envs reset and the last good checkpoint."""

    def __init__(self, message: str, *, iteration: int, checkpoint: Path, checks: list[str], envs_reset: int):
        super().__init__(message)
        self.iteration = iteration
        self.checkpoint = checkpoint
        self.checks = checks
        self.envs_reset = envs_reset


class _Health:
    """Consecutive rolled-back iterations per seed, from each iteration's ``health/*`` metrics."""

    CHECKS = ("obs", "reward", "loss", "params")

    def __init__(self, config: Config, echo):
        self.limit, self.num_seeds, self.echo = config.max_bad_iterations, config.num_seeds, echo
        self.streak = np.zeros(self.num_seeds, np.int64)
        self.envs = np.zeros(self.num_seeds, np.int64)  # envs reset during the current streak
        self.failed = [set() for _ in range(self.num_seeds)]  # checks failed during the current streak
        self.warned = False

    def _read(self, metrics, name: str) -> np.ndarray:
        return np.asarray(metrics[name], np.float64).reshape(self.num_seeds)

    def update(self, i: int, metrics: dict[str, Any]) -> list[int]:
        """Count iteration ``i``; returns the indices of the seeds that reached the limit (empty: carry on)."""
        rolled = self._read(metrics, "health/rolled_back") > 0  # blocks until the iteration is done
        if not rolled.any():
            self.streak[:], self.envs[:] = 0, 0
            self.failed = [set() for _ in range(self.num_seeds)]
            return []
        bad_envs = self._read(metrics, "health/bad_envs")
        flags = {c: self._read(metrics, f"health/nonfinite_{c}") > 0 for c in self.CHECKS}
        for s in range(self.num_seeds):
            if not rolled[s]:
                self.streak[s], self.envs[s], self.failed[s] = 0, 0, set()
                continue
            self.streak[s] += 1
            self.envs[s] += int(bad_envs[s])
            self.failed[s] |= {c for c in self.CHECKS if flags[c][s]}
        if not self.warned:
            self.warned = True
            which = [s for s in range(self.num_seeds) if rolled[s]]
            self.echo(
                f"reppo: warning: iteration {i}: non-finite {self.describe(which)}; update rolled back, "
                f"{int(bad_envs[which].sum())} envs reset (the run stops after {self.limit} consecutive; "
                "further ones are counted in the health/* columns)"
            )
        return [s for s in range(self.num_seeds) if self.streak[s] >= self.limit]

    def describe(self, which: list[int]) -> str:
        checks = sorted(set().union(*(self.failed[s] for s in which)), key=self.CHECKS.index)
        return ", ".join(checks) or "values"


@dataclass
class TrainResult:
    """What ``train`` and ``resume`` return."""

    state: TrainState
    """Final training state (parameters, optimiser states, dual variables, normaliser, env state, key); with
    several seeds every learner field has a leading seed axis."""
    config: Config
    """The resolved config the run used."""
    run_dir: Path
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    """One entry per evaluation of this process: env_steps, iteration, wall_s, eval_s (the part of wall_s spent
    in evaluations, these included), the aggregate over seeds of eval/episode_return etc., and ``per_seed`` (a
    list of the same metrics for each seed)."""
    compile_s: float = 0.0
    """Seconds spent compiling the iteration and the evaluation (not counted in wall_s)."""
    interrupted: bool = False
    """True when Ctrl-C stopped the run early (a checkpoint was written; resume continues it)."""

    @property
    def final_return(self) -> float:
        """Aggregate deterministic eval return of the last evaluation (NaN if none)."""
        return self.evaluations[-1]["eval/episode_return"] if self.evaluations else float("nan")


def enable_compilation_cache(path: str | Path | None = None) -> Path | None:
    """Keep compiled programs on disk so a rerun of the same config skips most of its compile time (about 35 s
    -> 9 s for CartpoleBalance on a 2-core CPU). Default folder: ``$JAX_COMPILATION_CACHE_DIR`` if set, else
    ``~/.cache/reppo/xla``; ``REPPO_COMPILATION_CACHE=0`` turns it off. Returns the folder used (None: off)."""
    if os.environ.get("REPPO_COMPILATION_CACHE", "1") == "0":
        return None
    path = Path(path or os.environ.get("JAX_COMPILATION_CACHE_DIR") or Path.home() / ".cache" / "reppo" / "xla")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # an unwritable cache only costs compile time
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return path


def default_run_dir(config: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.env}__{config.preset}__{config.seed}__{stamp}"


def _check_writable(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise OSError(f"run folder {path} is not writable: {exc.strerror}") from exc
    return path


# Room for the logs (metrics.csv, TensorBoard events) on top of the checkpoints, and per recorded video.
LOG_BYTES = 16 * 2**20
VIDEO_BYTES = 4 * 2**20


def _check_free_space(run_dir: Path, state: TrainState, config: Config) -> None:
    """Fail at start, not at the first checkpoint hours later, when the run folder's file system lacks room for
    ``MAX_TO_KEEP`` checkpoints plus the one being written (each about the size of the state) and the logs."""
    checkpoint = sum(x.nbytes for x in jax.tree.leaves(state))
    evaluations = -(-config.total_steps // config.eval_every)
    need = (MAX_TO_KEEP + 1) * checkpoint + LOG_BYTES + (VIDEO_BYTES * evaluations if config.video else 0)
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise OSError(
            f"run folder {run_dir} has {free / 2**20:.1f} MiB free; this run needs about {need / 2**20:.1f} MiB "
            f"({MAX_TO_KEEP + 1} checkpoints of {checkpoint / 2**20:.1f} MiB and the logs): free space or pass "
            "another --run-dir"
        )


def seeds_of(config: Config) -> list[int]:
    """The seeds a run trains: seed, seed + 1, ..., seed + num_seeds - 1."""
    return [config.seed + s for s in range(config.num_seeds)]


def on_schedule(iteration: int, config: Config) -> bool:
    """Whether the fixed evaluation schedule evaluates after ``iteration`` (an env-step multiple of eval_every
    was crossed during it)."""
    b, e = config.batch_size, config.eval_every
    return (iteration * b) // e > ((iteration - 1) * b) // e


class _Progress:
    """Live display: env steps, steps/s, latest eval return, ETA (rich)."""

    def __init__(self, enabled: bool, total_steps: int, completed: int, description: str):
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
        self._task = self._progress.add_task(description, total=total_steps, completed=completed, sps=0.0, eval="-")
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


class _StopRequest:
    """First Ctrl-C: finish the current iteration, checkpoint, return. Second Ctrl-C: abort at once."""

    def __init__(self, echo):
        self.requested = False
        self._echo = echo
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._echo("reppo: Ctrl-C: stopping after this iteration and writing a checkpoint (Ctrl-C again aborts)")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _start_wandb(config: Config, run_dir: Path):
    try:
        import wandb
    except ImportError as exc:
        raise ConfigError('track=True needs Weights & Biases: pip install "reppo[track]"') from exc
    id_file = run_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
    write_atomic(id_file, run_id)
    return wandb.init(
        project=config.wandb_project,
        name=run_dir.name,
        id=run_id,
        resume="allow",
        dir=str(run_dir),
        config=dataclasses.asdict(config),
    )


def train(config: Config, run_dir: str | Path | None = None, echo=print) -> TrainResult:
    """Train REPPO as ``config`` says; write config.yaml, metrics.csv, TensorBoard events and checkpoints into
    the run folder (a new one, default ``runs/<env>__<preset>__<seed>__<time>``).

    Raises ConfigError / UnknownEnvError / EnvLoadError / OSError before anything compiles when the input is bad.
    """
    config = resolve(config)
    run_dir = Path(run_dir or config.run_dir or default_run_dir(config))
    if (run_dir / CONFIG_FILE).exists() or (run_dir / METRICS_FILE).exists():
        raise ConfigError(f"run folder {run_dir} already holds a run; resume it (reppo train --resume) or pick another")
    config = dataclasses.replace(config, run_dir=str(run_dir))
    return _run(config, run_dir, echo, resume_from=None)


def resume(run_dir: str | Path, echo=print, **overrides) -> TrainResult:
    """Continue the run in ``run_dir`` from its latest checkpoint, appending to the same logs.

    ``overrides`` may set only fields that leave the trajectory unchanged (``total_steps``, ``progress``,
    ``checkpoint_every``, ``track``, ``video``); a larger ``total_steps`` extends a finished run. The result is
    bit for bit the run that would have happened without the interruption.
    """
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    bad = sorted(set(overrides) - set(RESUME_OVERRIDES))
    if bad:
        raise ConfigError(f"{bad[0]} cannot change when resuming; allowed: {', '.join(RESUME_OVERRIDES)}")
    config = resolve(dataclasses.replace(config, **overrides))
    # A run killed before its first checkpoint starts again from iteration 0 (the same trajectory).
    checkpointer = Checkpointer(run_dir)
    last = checkpointer.latest() or 0
    if config.num_iterations < last:
        raise ConfigError(
            f"total_steps={config.total_steps} is below the {last * config.batch_size} env steps this run has done"
        )
    return _run(config, run_dir, echo, resume_from=checkpointer)


def _run(config: Config, run_dir: Path, echo, resume_from: Checkpointer | None) -> TrainResult:
    num_seeds, seeds = config.num_seeds, seeds_of(config)
    mesh = parallel.make_mesh(config.devices)
    primary = parallel.is_primary()  # only process 0 writes files and prints
    echo = echo if primary else (lambda _: None)
    env = make_env(config.env, config.num_envs * num_seeds, impl=config.impl)
    parallel.check_divisible(env.num_envs, mesh)
    eval_env = make_env(config.env, config.eval_envs * num_seeds, impl=config.impl, randomize_steps=False)
    if primary:
        _check_writable(run_dir)
        write_atomic(run_dir / CONFIG_FILE, yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))

    init, iteration, algo = make_train(config, env, mesh)
    # Keys as host arrays: every process passes the same values into the programs that span the mesh.
    keys = np.stack([np.asarray(jax.random.split(jax.random.PRNGKey(s))) for s in seeds])  # (S, 2 [train, eval], 2)
    init_key = keys[0, 0] if num_seeds == 1 else keys[:, 0]
    key_eval = keys[0, 1]
    eval_key = lambda i: np.asarray(jax.random.fold_in(key_eval, i))
    batched = num_seeds > 1
    evaluate_fn = make_evaluate(algo.actor, eval_env, deterministic=True, num_seeds=num_seeds if batched else None)

    pending: list[dict[str, Any]] = []  # train metrics of the iterations since the last scheduled evaluation
    if resume_from is None or resume_from.latest() is None:
        start, wall0, eval_s = 0, 0.0, 0.0
        state = parallel.to_host(jax.jit(init)(init_key))  # on this process's first device, then placed below
        echo(f"reppo: training {config.env} ({config.preset} preset, seeds {_seed_text(seeds)}); logs in {run_dir}")
    else:
        state, meta = resume_from.restore(jax.eval_shape(init, init_key))
        start, wall0 = int(meta["iteration"]), float(meta["wall_s"])
        eval_s = float(meta.get("eval_s", 0.0))  # checkpoints written before eval_s was kept lack it
        pending = [{k: np.asarray(v, np.float64) for k, v in m.items()} for m in meta["pending"]]
        if start >= config.num_iterations:
            echo(f"reppo: {run_dir} is complete at {start * config.batch_size:,} env steps; "
                 "pass a larger --total-steps to extend it")  # fmt: skip
            return TrainResult(state=state, config=config, run_dir=run_dir)
        echo(f"reppo: resuming {run_dir} at iteration {start} ({start * config.batch_size:,} env steps)")
    if primary:
        _check_free_space(run_dir, state, config)
    checkpointer = resume_from or (Checkpointer(run_dir) if primary else None)  # None: never writes
    shardings = parallel.state_shardings(state, mesh, env.num_envs)
    state = parallel.put(state, shardings)

    t0 = time.perf_counter()
    replicated = parallel.replicated(mesh)
    lowered = parallel.jit_iteration(iteration, shardings, mesh).lower(state)
    metric_names = list(jax.tree.unflatten(lowered.out_tree, [0] * lowered.out_tree.num_leaves)[1])
    iterate = lowered.compile()
    evaluate = (
        jax.jit(evaluate_fn, in_shardings=replicated, out_shardings=replicated)
        .lower(state.actor_params, state.obs_stats, key_eval)
        .compile()
    )
    compile_s = time.perf_counter() - t0
    parallel.barrier("compiled")
    echo(f"reppo: compiled in {compile_s:.1f} s")

    columns = ["eval/episode_return", "eval/episode_return_std", "eval/episode_length", "perf/sps"]
    columns += [_column(k) for k in metric_names if not _is_health(k)]
    columns += [k for k in metric_names if _is_health(k)]
    purge_step = None
    if resume_from is not None:
        # Rows written after the checkpoint (by a killed process), and the off-schedule final evaluation of a
        # run that is now extended, are replaced by what this process logs.
        keep_last = on_schedule(start, config)
        keep = lambda row: int(row["iteration"]) < start or (int(row["iteration"]) == start and keep_last)
        if primary and (run_dir / METRICS_FILE).exists():
            rewrite_metrics(run_dir / METRICS_FILE, keep)
        purge_step = start * config.batch_size + (1 if keep_last else 0)
    wandb_run = _start_wandb(config, run_dir) if config.track and primary else None
    logger = RunLogger(run_dir, columns, seeds, purge_step=purge_step, wandb_run=wandb_run) if primary else None
    progress = _Progress(config.progress and primary, config.num_iterations * config.batch_size,
                         start * config.batch_size, config.env)  # fmt: skip
    result = TrainResult(state=state, config=config, run_dir=run_dir, compile_s=compile_s)

    def policy_tree(state: TrainState) -> dict[str, Any]:
        return {"actor_params": state.actor_params, "obs_mean": state.obs_stats.mean, "obs_var": state.obs_stats.var}

    def save(state: TrainState, i: int, wall_s: float, finished: bool) -> None:
        state = parallel.to_host(state)  # a collective with several processes: all of them get here
        if not primary:
            return
        meta = {
            "iteration": i,
            "env_steps": i * config.batch_size,
            "wall_s": wall_s,
            "eval_s": eval_s,
            "finished": finished,
            "pending": [{k: np.asarray(v, np.float64).reshape(-1).tolist() for k, v in m.items()} for m in pending],
            "env": config.env,
            "seeds": seeds,
            "obs_size": env.obs_size,
            "action_size": env.action_size,
        }
        checkpointer.save(i, state, policy_tree(state), meta)

    health = _Health(config, echo) if config.max_bad_iterations else None
    single_process = jax.process_count() == 1
    unread: list[tuple[int, dict[str, Any]]] = []  # iterations whose health flags the host has not read yet
    t_start = time.perf_counter()
    i = start
    try:
        with _StopRequest(echo) as stop:
            for i in range(start + 1, config.num_iterations + 1):
                state, metrics = iterate(state)
                pending.append(metrics)
                env_steps = i * config.batch_size
                final = i == config.num_iterations
                scheduled = on_schedule(i, config)
                checkpoint_due = bool(config.checkpoint_every and i % config.checkpoint_every == 0)
                if single_process:
                    stopping = stop.requested
                else:  # a Ctrl-C on any process is agreed on (a collective) at evaluations and checkpoints
                    sync = final or scheduled or checkpoint_due
                    stopping = parallel.any_process(stop.requested) if sync else False
                if health is not None:
                    unread.append((i, metrics))
                    waits = final or scheduled or checkpoint_due or stopping
                    while len(unread) > (0 if waits else 1):  # all but the newest, unless the loop waits anyway
                        j, m = unread.pop(0)
                        diverged = health.update(j, parallel.to_host(m))
                        if diverged:
                            save(state, i, wall0 + time.perf_counter() - t_start, finished=False)
                            where = run_dir.absolute() / CHECKPOINT_DIR / str(i)
                            raise _diverged(health, diverged, j, config, seeds, where)
                wall_s = wall0 + time.perf_counter() - t_start
                sps = (env_steps - start * config.batch_size) / max(wall_s - wall0, 1e-9)
                if scheduled or final:
                    jax.block_until_ready(state.actor_params)  # the queued iteration is training, not evaluation
                    t_eval = time.perf_counter()
                    out = parallel.to_host(evaluate(state.actor_params, state.obs_stats, eval_key(i)))
                    eval_s += time.perf_counter() - t_eval
                    pending = parallel.to_host(pending)
                    per_seed = _eval_rows(out, pending, sps, num_seeds)
                    if scheduled:
                        pending = []
                    wall_s = wall0 + time.perf_counter() - t_start
                    aggregate = mean_over_seeds(per_seed)
                    if logger is not None:
                        logger.log(env_steps, i, wall_s, per_seed)
                    result.evaluations.append({"env_steps": env_steps, "iteration": i, "wall_s": wall_s,
                                               "eval_s": eval_s, **aggregate, "per_seed": per_seed})  # fmt: skip
                    progress.update(env_steps, sps, aggregate["eval/episode_return"])
                    if config.video and primary:
                        _record_video(config, run_dir, algo, parallel.to_host(state), env_steps, eval_key(i))
                else:
                    progress.update(env_steps, sps)
                if final or stopping or checkpoint_due:
                    save(state, i, wall0 + time.perf_counter() - t_start, finished=final)
                if stopping:
                    result.interrupted = True
                    break
    finally:
        progress.close()
        if logger is not None:
            logger.close()
        if checkpointer is not None:
            checkpointer.close()
    result.state = state
    steps = i * config.batch_size
    if result.interrupted:
        echo(f"reppo: stopped at {steps:,} env steps, checkpoint written; resume: reppo train --resume {run_dir}")
    else:
        echo(f"reppo: done, final deterministic eval return {result.final_return:.1f}; logs in {run_dir} "
             f"(tensorboard --logdir {run_dir})")  # fmt: skip
    return result


def _record_video(config: Config, run_dir: Path, algo, state: TrainState, env_steps: int, key) -> None:
    """``RUN_DIR/videos/eval_<env_steps>.mp4``: one episode of the deterministic policy of the first seed."""
    from reppo.policy import Policy
    from reppo.video import render_episode

    first = (lambda x: x[0]) if config.num_seeds > 1 else (lambda x: x)
    policy = Policy(
        algo.actor,
        jax.tree.map(first, state.actor_params),
        np.asarray(first(state.obs_stats.mean)),
        np.asarray(first(state.obs_stats.var)),
        env=config.env,
    )
    render_episode(config.env, policy, run_dir / "videos" / f"eval_{env_steps:010d}.mp4", key=key, impl=config.impl)


def _diverged(health: _Health, which: list[int], i: int, config: Config, seeds: list[int], checkpoint: Path):
    seed_text = f", seed {', '.join(str(seeds[s]) for s in which)}" if config.num_seeds > 1 else ""
    envs = int(sum(health.envs[s] for s in which))
    message = (
        f"training diverged at iteration {i} ({i * config.batch_size:,} env steps{seed_text}): "
        f"{config.max_bad_iterations} consecutive iterations rolled back for non-finite {health.describe(which)}, "
        f"{envs} envs reset; last good checkpoint: {checkpoint}"
    )
    checks = sorted(set().union(*(health.failed[s] for s in which)), key=_Health.CHECKS.index)
    return TrainingDivergedError(message, iteration=i, checkpoint=checkpoint, checks=checks, envs_reset=envs)


def _is_health(name: str) -> bool:
    return name.startswith("health/")


def _column(name: str) -> str:
    """Log column of an iteration metric: ``health/*`` as they are, the others under ``train/``."""
    return name if _is_health(name) else f"train/{name}"


def _seed_text(seeds: list[int]) -> str:
    return str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}..{seeds[-1]}"


def _eval_rows(out, pending: list[dict[str, Any]], sps: float, num_seeds: int) -> list[dict[str, float]]:
    """Per-seed rows: eval return statistics, the mean train metrics since the last scheduled evaluation (over the
    iterations that were not rolled back) and the ``health/*`` counts summed over those iterations."""
    returns = np.asarray(out.returns, np.float64).reshape(num_seeds, -1)
    lengths = np.asarray(out.lengths, np.float64).reshape(num_seeds, -1)
    train = {k: np.stack([np.asarray(m[k], np.float64).reshape(num_seeds) for m in pending]) for k in pending[0]}
    rolled_back = train.get("health/rolled_back", np.zeros((len(pending), num_seeds)))
    good = rolled_back == 0
    rows = []
    for s in range(num_seeds):
        row = {
            "eval/episode_return": float(returns[s].mean()),
            "eval/episode_return_std": float(returns[s].std()),
            "eval/episode_length": float(lengths[s].mean()),
            "perf/sps": sps,
        }
        for k, v in train.items():
            if _is_health(k):
                row[k] = float(v[:, s].sum())
            else:  # NaN when every iteration since the last evaluation was rolled back
                row[_column(k)] = float(v[good[:, s], s].mean()) if good[:, s].any() else float("nan")
        rows.append(row)
    return rows
