"""The host loop of ``reppo train``: start or resume, compile, iterate, evaluate, log, checkpoint.

The loop never computes a loss: it calls the compiled iteration of the run's rollout path (``reppo.rollout``) once
per iteration. A run's trajectory depends only on its config and seed, never on ``total_steps``: evaluations fall
on a fixed schedule (every ``eval_every`` env steps) plus one final evaluation that does not touch the training
state, so a shorter run is an exact prefix of a longer one and a checkpoint can be resumed and extended.

With the NaN/Inf guard on (``max_bad_iterations > 0``) the loop reads each iteration's ``health/*`` flags (one
scalar per seed, ``reppo.health``) and stops with :class:`TrainingDivergedError` after ``max_bad_iterations``
consecutive rolled-back iterations of a seed, after checkpointing the state it holds (rolled back, hence the last
good learner). The flags of iteration i are read after iteration i + 1 has been dispatched, so the host never makes
the device wait; at an evaluation, a checkpoint, the last iteration or a Ctrl-C (where the loop waits anyway) they
are read at once. A divergence found one iteration late is reported at the iteration where it happened, and the
checkpoint is that of the next iteration (finite: rolled back again, or a normal update).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
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
from reppo.checkpoint import CHECKPOINT_DIR, MAX_TO_KEEP, Checkpointer
from reppo.config import CONFIG_FILE, Config, ConfigError, check_action_space, check_encoder, load_config, resolve
from reppo.envs.build import build_envs, is_host, label
from reppo.evaluate import make_evaluate
from reppo.files import write_atomic
from reppo.health import HealthMonitor, TrainingDivergedError
from reppo.logging import METRICS_FILE, RunLogger, mean_over_seeds, rewrite_metrics
from reppo.progress import Progress, StopRequest
from reppo.rollout import TrainState, make_rollout

__all__ = ["TrainResult", "TrainingDivergedError", "enable_compilation_cache", "on_schedule", "resume", "train"]

WANDB_ID_FILE = "wandb-run-id"
# Flags that may change when a run is resumed: none of them changes the training trajectory.
RESUME_OVERRIDES = ("total_steps", "progress", "checkpoint_every", "track", "video", "devices")


@dataclass
class TrainResult:
    """What ``train`` and ``resume`` return."""

    state: TrainState
    """Final training state: ``state.learner`` (parameters, optimiser states, dual variables, statistics, with a
    leading seed axis of length ``num_seeds``), the env state, the keys and the iteration counter."""
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
    init_head_saturation: float | None = None
    """max |dQ/dlogit| of the first seed's HL-Gauss head at initialisation (:func:`head_saturation`; printed at
    the start); None for a resumed run."""

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


def train(config: Config, run_dir: str | Path | None = None, echo=print, env=None, eval_env=None) -> TrainResult:
    """Train REPPO as ``config`` says; write config.yaml, metrics.csv, TensorBoard events and checkpoints into
    the run folder (a new one, default ``runs/<env>__<preset>__<seed>__<time>``).

    ``env`` trains on an env object instead of ``config.env`` (``reppo.envs.build``: a Gymnasium VectorEnv of
    num_envs * num_seeds envs, or a JAX env with the Brax / Playground interface); ``eval_env`` is the evaluation
    env (a VectorEnv of eval_envs * num_seeds envs; a JAX env is reused). ``config.env`` then becomes the run's
    label (``reppo.envs.build.label``).

    Raises ConfigError / UnknownEnvError / EnvLoadError / OSError before anything compiles when the input is bad.
    """
    if env is not None:
        config = dataclasses.replace(config, env=label(env, config.env))
    config = resolve(config)
    run_dir = Path(run_dir or config.run_dir or default_run_dir(config))
    if (run_dir / CONFIG_FILE).exists() or (run_dir / METRICS_FILE).exists():
        raise ConfigError(f"run folder {run_dir} already holds a run; resume it (reppo train --resume) or pick another")
    config = dataclasses.replace(config, run_dir=str(run_dir))
    return _Run(config, run_dir, echo, resume_from=None, env=env, eval_env=eval_env).train()


def resume(run_dir: str | Path, echo=print, env=None, eval_env=None, **overrides) -> TrainResult:
    """Continue the run in ``run_dir`` from its latest checkpoint, appending to the same logs.

    ``overrides`` may set only fields that leave the trajectory unchanged (``total_steps``, ``progress``,
    ``checkpoint_every``, ``track``, ``video``, ``devices``); a larger ``total_steps`` extends a finished run. The
    result is bit for bit the run that would have happened without the interruption. A run on a host env (Gymnasium,
    EnvPool, ManiSkill) resumes with its envs reset (a host env's state is not in the checkpoint); the learner, the
    keys and the logs continue exactly. A run on env objects takes them again as ``env`` / ``eval_env``.
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
    return _Run(config, run_dir, echo, resume_from=checkpointer, env=env, eval_env=eval_env).train()


class _Run:
    """One process's part of a run, as named steps: build, start or restore, compile, open the logs, then per
    iteration iterate, read the guard's flags, evaluate, checkpoint."""

    def __init__(self, config: Config, run_dir: Path, echo, resume_from: Checkpointer | None, env=None,
                 eval_env=None):  # fmt: skip
        self.config, self.run_dir, self.resume_from = config, run_dir, resume_from
        self.seeds = seeds_of(config)
        self.mesh = parallel.make_mesh(config.devices)
        self.primary = parallel.is_primary()  # only process 0 writes files and prints
        self.echo = echo if self.primary else (lambda _: None)
        self.env, self.eval_env = build_envs(config, env, eval_env)
        check_action_space(config, int(getattr(self.env, "num_actions", 0) or 0))
        check_encoder(config, getattr(self.env, "obs_image", None))
        parallel.check_divisible(self.env.num_envs, self.mesh)
        if self.primary:
            _check_writable(run_dir)
            write_atomic(run_dir / CONFIG_FILE, yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
        self.rollout = make_rollout(config, self.env, self.mesh)
        # Keys as host arrays: every process passes the same values into the programs that span the mesh.
        keys = np.stack([np.asarray(jax.random.split(jax.random.PRNGKey(s))) for s in self.seeds])  # (S, 2, 2)
        self.init_keys, self.key_eval = keys[:, 0], keys[0, 1]
        self.pending: list[dict[str, Any]] = []  # train metrics of the iterations since the last scheduled evaluation
        self.unread: list[tuple[int, dict[str, Any]]] = []  # iterations whose health flags were not read yet
        self.health = HealthMonitor(config, self.echo) if config.max_bad_iterations else None
        self.start, self.wall0, self.eval_s = 0, 0.0, 0.0
        self.init_head_saturation: float | None = None

    def eval_keys(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(the evaluation's key, the video's key) after iteration ``i``: the two halves of a split of
        ``fold_in(key_eval, i)``, so that the video never replays the evaluation's randomness."""
        keys = jax.random.split(jax.random.fold_in(self.key_eval, i))
        return np.asarray(keys[0]), np.asarray(keys[1])

    # ---- steps before the loop ----------------------------------------------------------------------------
    def start_or_restore(self) -> TrainState:
        c, run_dir = self.config, self.run_dir
        if self.resume_from is None or self.resume_from.latest() is None:
            state = parallel.to_host(self.rollout.start(self.init_keys))  # placed on the mesh by the caller
            self.echo(f"reppo: training {c.env} ({c.preset} preset, seeds {_seed_text(self.seeds)}); logs in {run_dir}")
            self.init_head_saturation = head_saturation(self.rollout.seeded.learner, state.learner)
            self.echo(f"reppo: critic head at initialisation: max |dQ/dlogit| = {self.init_head_saturation:.2e}")
            self._note_frozen_tail(resumed=False)
            return state
        state, meta = self.resume_from.restore(self.rollout.abstract_state(self.init_keys))
        self.start, self.wall0 = int(meta["iteration"]), float(meta["wall_s"])
        self.eval_s = float(meta.get("eval_s", 0.0))  # checkpoints written before eval_s was kept lack it
        self.pending = [{k: np.asarray(v, np.float64) for k, v in m.items()} for m in meta["pending"]]
        if self.start < c.num_iterations:
            self.echo(f"reppo: resuming {run_dir} at iteration {self.start} ({self.start * c.batch_size:,} env steps)")
            self._note_frozen_tail(resumed=True)
        return state

    def _note_frozen_tail(self, resumed: bool) -> None:
        """With lr_decay_steps below total_steps, say that the iterations after the decay cannot change the
        networks (a preset's decay left in place when --total-steps grows, or a decayed run extended on resume)."""
        c = self.config
        if not c.lr_decay_steps or c.num_iterations <= c.lr_decay_iterations:
            return
        frozen = (c.num_iterations - c.lr_decay_iterations) * c.batch_size
        hint = (
            "lr_decay_steps cannot change on resume"
            if resumed
            else f"to train them, set --lr-decay-steps {c.total_steps}"
        )
        self.echo(
            f"reppo: note: the actor and critic learning rates reach 0 at {c.lr_decay_iterations * c.batch_size:,} "
            f"env steps (lr_decay_steps={c.lr_decay_steps}), so the last {frozen:,} env steps of "
            f"total_steps={c.total_steps} leave the networks unchanged; {hint}"
        )

    def compile(self, state: TrainState) -> TrainState:
        """Place the state on the mesh and compile the iteration and the evaluation; returns the placed state."""
        shardings = parallel.state_shardings(state, self.mesh, self.env.num_envs)
        state = parallel.put(state, shardings)
        t0 = time.perf_counter()
        self.iterate, self.metric_names = self.rollout.compile(state, shardings, self.mesh)
        self.evaluate = self.compile_evaluate(state.learner)
        self.compile_s = time.perf_counter() - t0
        parallel.barrier("compiled")
        self.echo(f"reppo: compiled in {self.compile_s:.1f} s")
        return state

    def compile_evaluate(self, learner):
        """The evaluation: one compiled program on a JAX env; on a host env, a Python loop with a jitted act."""
        actor, num_seeds = self.rollout.seeded.learner.actor, self.config.num_seeds
        if is_host(self.eval_env):
            from reppo.evaluate_host import make_host_evaluate

            return make_host_evaluate(actor, self.eval_env, num_seeds)
        replicated = parallel.replicated(self.mesh)
        evaluate = jax.jit(make_evaluate(actor, self.eval_env, num_seeds), in_shardings=replicated,
                           out_shardings=replicated)  # fmt: skip
        return evaluate.lower(learner.actor_params, learner.obs_stats, self.key_eval).compile()

    def open_logs(self) -> None:
        c, run_dir, primary = self.config, self.run_dir, self.primary
        names = self.metric_names
        columns = ["eval/episode_return", "eval/episode_return_std", "eval/episode_length", "perf/sps"]
        columns += [_column(k) for k in names if not _is_health(k)] + [k for k in names if _is_health(k)]
        purge_step = None
        if self.resume_from is not None:
            # Rows written after the checkpoint (by a killed process), and the off-schedule final evaluation of a
            # run that is now extended, are replaced by what this process logs.
            start, keep_last = self.start, on_schedule(self.start, c)
            keep = lambda row: int(row["iteration"]) < start or (int(row["iteration"]) == start and keep_last)
            if primary and (run_dir / METRICS_FILE).exists():
                rewrite_metrics(run_dir / METRICS_FILE, keep)
            purge_step = start * c.batch_size + (1 if keep_last else 0)
        wandb_run = _start_wandb(c, run_dir) if c.track and primary else None
        self.logger = (
            RunLogger(run_dir, columns, self.seeds, purge_step=purge_step, wandb_run=wandb_run) if primary else None
        )
        self.checkpointer = self.resume_from or (Checkpointer(run_dir) if primary else None)  # None: never writes
        self.progress = Progress(c.progress and primary, c.num_iterations * c.batch_size, self.start * c.batch_size,
                                 c.env)  # fmt: skip

    # ---- the loop -----------------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        c = self.config
        state = self.start_or_restore()
        if self.start >= c.num_iterations:
            self.echo(f"reppo: {self.run_dir} is complete at {self.start * c.batch_size:,} env steps; "
                      "pass a larger --total-steps to extend it")  # fmt: skip
            return TrainResult(state=state, config=c, run_dir=self.run_dir)
        if self.primary:
            _check_free_space(self.run_dir, state, c)
        state = self.compile(state)
        self.open_logs()
        self.result = TrainResult(state=state, config=c, run_dir=self.run_dir, compile_s=self.compile_s,
                                  init_head_saturation=self.init_head_saturation)  # fmt: skip
        try:
            state, i = self.loop(state)
        finally:
            self.close()
        self.result.state = state
        steps = i * c.batch_size
        if self.result.interrupted:
            self.echo(f"reppo: stopped at {steps:,} env steps, checkpoint written; resume: reppo train --resume "
                      f"{self.run_dir}")  # fmt: skip
        else:
            self.echo(f"reppo: done, final deterministic eval return {self.result.final_return:.1f}; logs in "
                      f"{self.run_dir} (tensorboard --logdir {self.run_dir})")  # fmt: skip
        return self.result

    def loop(self, state: TrainState) -> tuple[TrainState, int]:
        c = self.config
        self.t_start, i = time.perf_counter(), self.start
        with StopRequest(self.echo) as stop:
            for i in range(self.start + 1, c.num_iterations + 1):
                state, metrics = self.iterate(state)
                self.pending.append(metrics)
                final, scheduled = i == c.num_iterations, on_schedule(i, c)
                checkpoint_due = bool(c.checkpoint_every and i % c.checkpoint_every == 0)
                stopping = self.agree_on_stop(stop.requested, final or scheduled or checkpoint_due)
                if self.health is not None:
                    self.read_health(state, i, metrics, waits=final or scheduled or checkpoint_due or stopping)
                sps = (i - self.start) * c.batch_size / max(self.elapsed() - self.wall0, 1e-9)
                if scheduled or final:
                    self.evaluate_and_log(state, i, sps, scheduled)
                else:
                    self.progress.update(i * c.batch_size, sps)
                if final or stopping or checkpoint_due:
                    self.save(state, i, finished=final)
                if stopping:
                    self.result.interrupted = True
                    break
        return state, i

    def elapsed(self) -> float:
        """Wall-clock seconds of the run so far, earlier processes' (before a resume) included."""
        return self.wall0 + time.perf_counter() - self.t_start

    def agree_on_stop(self, requested: bool, sync: bool) -> bool:
        """Whether to stop after this iteration. With several processes a Ctrl-C on any of them is agreed on (a
        collective) at evaluations and checkpoints."""
        if jax.process_count() == 1:
            return requested
        return parallel.any_process(requested) if sync else False

    def read_health(self, state: TrainState, i: int, metrics: dict[str, Any], waits: bool) -> None:
        """Read the guard's flags of every iteration but the newest (all of them when the loop ``waits`` anyway);
        on a divergence, checkpoint and raise :class:`TrainingDivergedError`."""
        self.unread.append((i, metrics))
        while len(self.unread) > (0 if waits else 1):
            j, m = self.unread.pop(0)
            diverged = self.health.update(j, parallel.to_host(m))
            if diverged:
                self.save(state, i, finished=False)
                raise self.health.diverged(diverged, j, self.seeds, self.run_dir.absolute() / CHECKPOINT_DIR / str(i))

    def evaluate_and_log(self, state: TrainState, i: int, sps: float, scheduled: bool) -> None:
        c = self.config
        learner = state.learner
        jax.block_until_ready(learner.actor_params)  # the queued iteration is training, not evaluation
        t_eval = time.perf_counter()
        eval_key, video_key = self.eval_keys(i)
        out = parallel.to_host(self.evaluate(learner.actor_params, learner.obs_stats, eval_key))
        self.eval_s += time.perf_counter() - t_eval
        self.pending = parallel.to_host(self.pending)
        per_seed = _eval_rows(out, self.pending, sps, c.num_seeds)
        if scheduled:
            self.pending = []
        wall_s, env_steps = self.elapsed(), i * c.batch_size
        aggregate = mean_over_seeds(per_seed)
        if self.logger is not None:
            self.logger.log(env_steps, i, wall_s, per_seed)
        self.result.evaluations.append({"env_steps": env_steps, "iteration": i, "wall_s": wall_s,
                                        "eval_s": self.eval_s, **aggregate, "per_seed": per_seed})  # fmt: skip
        self.progress.update(env_steps, sps, aggregate["eval/episode_return"])
        if c.video and self.primary:
            self.record_video(parallel.to_host(learner), env_steps, video_key)

    def save(self, state: TrainState, i: int, finished: bool) -> None:
        state = parallel.to_host(state)  # a collective with several processes: all of them get here
        if not self.primary:
            return
        c = self.config
        image = self.rollout.seeded.learner.spaces.image
        meta = {
            "iteration": i,
            "env_steps": i * c.batch_size,
            "wall_s": self.elapsed(),
            "eval_s": self.eval_s,
            "finished": finished,
            "pending": [
                {k: np.asarray(v, np.float64).reshape(-1).tolist() for k, v in m.items()} for m in self.pending
            ],
            "env": c.env,
            "seeds": self.seeds,
            "obs_size": self.env.obs_size,
            "action_size": self.env.action_size,
            "num_actions": int(getattr(self.env, "num_actions", 0) or 0),
            "obs_image": None if image is None else image.to_list(),
        }
        self.checkpointer.save(i, state, _policy_tree(state.learner, c.num_seeds), meta)

    def record_video(self, learner, env_steps: int, key) -> None:
        """``RUN_DIR/videos/eval_<env_steps>.mp4``: one episode of the deterministic policy of the first seed."""
        from reppo.policy import Policy
        from reppo.video import render_episode

        c = self.config
        policy = Policy(self.rollout.seeded.learner.actor, jax.tree.map(lambda x: x[0], learner.actor_params),
                        learner.obs_stats.mean[0], learner.obs_stats.var[0], env=c.env)  # fmt: skip
        render_episode(c.env, policy, self.run_dir / "videos" / f"eval_{env_steps:010d}.mp4", key=key, impl=c.impl)

    def close(self) -> None:
        for env in (self.env, self.eval_env):
            getattr(env, "close", lambda: None)()
        self.progress.close()
        if self.logger is not None:
            self.logger.close()
        if self.checkpointer is not None:
            self.checkpointer.close()


HEAD_SATURATION_ROWS = 256


def head_saturation(learner, state) -> float:
    """max |dQ/dlogit| of the first seed's critic (``Learner.head_saturation``) over ``HEAD_SATURATION_ROWS``
    normalised observations drawn from N(0, 1) and actions uniform in [-1, 1] (numpy seed 0: a diagnostic, no key
    of the run is used)."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(HEAD_SATURATION_ROWS, learner.spaces.critic_obs_size)).astype(np.float32)
    actions = rng.uniform(-1.0, 1.0, (HEAD_SATURATION_ROWS, learner.spaces.action_size)).astype(np.float32)
    critic_params = jax.tree.map(lambda x: x[0], state.critic_params)
    return float(jax.jit(learner.head_saturation)(critic_params, obs, actions))


def _policy_tree(learner, num_seeds: int) -> dict[str, Any]:
    """The checkpoint's ``policy`` item: actor parameters and observation statistics, with the seed axis for
    several seeds and without it for one (what ``reppo.load`` reads)."""
    pick = (lambda x: x) if num_seeds > 1 else (lambda x: x[0])
    tree = {"actor_params": learner.actor_params, "obs_mean": learner.obs_stats.mean, "obs_var": learner.obs_stats.var}
    return jax.tree.map(pick, tree)


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
