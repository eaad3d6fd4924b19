"""``reppo`` command line: ``reppo train|eval|video|plot|export|bench``.

``reppo train`` flags are the fields of :class:`reppo.config.Config` (tyro, hyphenated). ``--preset`` is applied
first and any other flag overrides it, whatever the order on the command line. ``--resume RUN_DIR`` continues a
run; only flags that leave its trajectory unchanged (``--total-steps``, ``--progress``, ...) may be given with it.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Annotated, Literal

import tyro

from reppo.plot import BOOTSTRAP_REPS

USAGE = """usage: reppo COMMAND [flags]   (reppo COMMAND --help lists its flags)

commands:
  train    train a policy with REPPO; --resume RUN_DIR continues a run
  eval     deterministic and stochastic return of a run's policy
  video    render an episode of a run's policy to an MP4
  plot     eval-return curves of runs (against env steps and wall-clock)
  export   write a run's policy as a file that runs without reppo (ONNX)
  bench    REPPO, Brax PPO and Brax SAC side by side on a suite of tasks (--report-only: recompute a summary)
"""


def _int_fields() -> set[str]:
    """Hyphenated names of the Config fields that hold integers."""
    from reppo.config import Config

    return {f.name.replace("_", "-") for f in dataclasses.fields(Config) if f.type in ("int", int, "int | None")}


def _integral(value: str) -> str:
    """'5e6' -> '5000000' (so integer flags accept scientific notation); anything else unchanged."""
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() and not value.lstrip("-").isdigit() else value


def _preprocess(args: list[str]) -> tuple[str, list[str]]:
    """Find --preset (default cpu) and accept scientific notation (5e6) for integer flags."""
    int_flags = _int_fields()
    preset, flag, out = "cpu", None, []
    for arg in args:
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if eq:
                value = _integral(value) if name in int_flags else value
                preset = value if name == "preset" else preset
                out.append(f"--{name}={value}")
                flag = None
            else:
                out.append(arg)
                flag = name
            continue
        if flag in int_flags:
            arg = _integral(arg)
        elif flag == "preset":
            preset = arg
        out.append(arg)
        flag = None
    return preset, out


def _fail(message: str) -> int:
    print(f"reppo: error: {message}", file=sys.stderr)
    return 2


LAUNCH_FLAGS = ("coordinator-address", "num-processes", "process-id")


def _take_flag(args: list[str], name: str) -> tuple[str | None, list[str]]:
    """Take ``--name VALUE`` (or ``--name=VALUE``) out of ``args``."""
    for i, arg in enumerate(args):
        if arg == f"--{name}":
            if i + 1 >= len(args):
                raise ValueError(f"--{name} needs a value")
            return args[i + 1], args[:i] + args[i + 2 :]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1], args[:i] + args[i + 1 :]
    return None, args


def train_command(args: list[str]) -> int:
    from reppo import parallel
    from reppo.checkpoint import CheckpointError
    from reppo.config import ConfigError, load_config, preset_config
    from reppo.envs import EnvLoadError, UnknownEnvError
    from reppo.training import RESUME_OVERRIDES, TrainingDivergedError, resume, train

    try:
        resume_dir, args = _take_flag(args, "resume")
        if resume_dir is not None and resume_dir.startswith("--"):
            raise ValueError("--resume needs a run folder: reppo train --resume RUN_DIR")
        launch = {}
        for name in LAUNCH_FLAGS:
            launch[name.replace("-", "_")], args = _take_flag(args, name)
        preset, args = _preprocess(args)
        default = load_config(resume_dir) if resume_dir else preset_config(preset)
        if "--help" not in args and "-h" not in args:
            parallel.initialize(**launch)  # a multi-process run, when the flags or REPPO_* variables say so
    except (ValueError, CheckpointError) as exc:
        return _fail(str(exc))
    config = tyro.cli(
        type(default),
        default=default,
        args=args,
        prog="reppo train",
        description=(
            "Train a policy with REPPO on a MuJoCo Playground task (--resume RUN_DIR continues a run). A multi-process "
            "run also takes --coordinator-address HOST:PORT --num-processes N --process-id I (or the variables "
            "REPPO_COORDINATOR_ADDRESS, REPPO_NUM_PROCESSES, REPPO_PROCESS_ID)."
        ),
    )
    try:
        if resume_dir:
            names = [f.name for f in dataclasses.fields(config)]
            changed = [n for n in names if getattr(config, n) != getattr(default, n)]
            bad = [name for name in changed if name not in RESUME_OVERRIDES]
            if bad:
                allowed = ", ".join("--" + n.replace("_", "-") for n in RESUME_OVERRIDES)
                return _fail(f"--{bad[0].replace('_', '-')} cannot change when resuming; allowed: {allowed}")
            result = resume(resume_dir, **{name: getattr(config, name) for name in changed})
        else:
            result = train(config)
    except (ConfigError, CheckpointError, UnknownEnvError, EnvLoadError, parallel.ParallelError, OSError) as exc:
        return _fail(str(exc))
    except TrainingDivergedError as exc:  # non-finite values: exit 3 with the one-line report
        print(f"reppo: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("reppo: aborted", file=sys.stderr)
        return 130
    return 130 if result.interrupted else 0


RunDir = Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]


@dataclass(frozen=True)
class EvalArgs:
    """Evaluate a run's policy (latest checkpoint) on whole episodes of its env."""

    run_dir: RunDir
    episodes: int = 20
    """Episodes per mode (run in parallel)."""
    seed_index: int = 0
    """Which seed of a --num-seeds run (0 is its first seed)."""
    seed: int = 0
    """PRNG seed of the evaluation (initial states, stochastic actions)."""


def eval_command(args: list[str]) -> int:
    import jax
    import numpy as np

    from reppo.config import load_config
    from reppo.evaluate import evaluate_policy
    from reppo.policy import load

    a = tyro.cli(EvalArgs, args=args, prog="reppo eval")
    try:
        config = load_config(a.run_dir)
        policy = load(a.run_dir, seed_index=a.seed_index)
        key = jax.random.PRNGKey(a.seed)
        print(f"{policy.env}, {a.episodes} episodes, {a.run_dir}")
        print(f"{'policy':<14}{'mean':>10}{'std':>10}{'min':>10}{'max':>10}")
        for name, deterministic in (("deterministic", True), ("stochastic", False)):
            out = evaluate_policy(policy, a.episodes, key, deterministic=deterministic, impl=config.impl)
            r = np.asarray(out.returns)
            print(f"{name:<14}{r.mean():>10.2f}{r.std():>10.2f}{r.min():>10.2f}{r.max():>10.2f}")
    except (ValueError, RuntimeError, OSError) as exc:
        return _fail(str(exc))
    return 0


@dataclass(frozen=True)
class VideoArgs:
    """Render one episode of a run's deterministic policy to an MP4 (headless, MuJoCo's offscreen renderer)."""

    run_dir: RunDir
    out: str = "episode.mp4"
    """Output MP4 file."""
    seed_index: int = 0
    """Which seed of a --num-seeds run."""
    seed: int = 0
    """PRNG seed of the episode's initial state."""
    max_steps: int | None = None
    """Stop after this many steps (default: the whole episode)."""
    width: int = 320
    height: int = 240
    camera: str | None = None
    """Camera name (default: the model's "track" camera if it has one, as locomotion robots do, else the free
    camera)."""


def video_command(args: list[str]) -> int:
    a = tyro.cli(VideoArgs, args=args, prog="reppo video")
    try:
        import jax

        from reppo.config import load_config
        from reppo.policy import load
        from reppo.video import render_episode

        config = load_config(a.run_dir)
        policy = load(a.run_dir, seed_index=a.seed_index)
        out = render_episode(
            policy.env, policy, a.out, key=jax.random.PRNGKey(a.seed), impl=config.impl, max_steps=a.max_steps,
            width=a.width, height=a.height, camera=a.camera,
        )  # fmt: skip
    except (ValueError, RuntimeError, OSError) as exc:
        return _fail(str(exc))
    print(f"reppo: wrote {out.path} ({out.num_frames} frames at {out.fps:.0f} fps, return {out.episode_return:.1f})")
    return 0


@dataclass(frozen=True)
class PlotArgs:
    """Plot deterministic eval return against env steps and wall-clock time for runs (mean and interval)."""

    run_dirs: Annotated[tuple[str, ...], tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR...")]
    out: str = "curves.png"
    """Output PNG file."""
    label_by: Literal["env", "run"] = "env"
    """Group curves by env id (seeds and runs of a task pooled) or draw each run folder on its own."""
    interval: Literal["ci95", "std", "minmax"] = "ci95"
    """Band around the mean: 95% bootstrap CI of the mean, one standard deviation, or min-max."""


def plot_command(args: list[str]) -> int:
    from reppo.plot import plot_curves

    a = tyro.cli(PlotArgs, args=args, prog="reppo plot")
    try:
        path = plot_curves(a.run_dirs, a.out, label_by=a.label_by, interval=a.interval)
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    print(f"reppo: wrote {path}")
    return 0


@dataclass(frozen=True)
class ExportArgs:
    """Export a run's policy (raw observation -> action, normalisation included) for use without reppo or JAX."""

    run_dir: RunDir
    format: Literal["onnx"] = "onnx"
    """File format."""
    out: str | None = None
    """Output file (default RUN_DIR/policy.onnx)."""
    seed_index: int = 0
    """Which seed of a --num-seeds run."""


def export_command(args: list[str]) -> int:
    from pathlib import Path

    a = tyro.cli(ExportArgs, args=args, prog="reppo export")
    try:
        from reppo.export import export_policy
        from reppo.policy import load

        policy = load(a.run_dir, seed_index=a.seed_index)
        path = export_policy(policy, a.out or Path(a.run_dir) / f"policy.{a.format}", format=a.format)
    except (ValueError, RuntimeError, OSError, ImportError) as exc:
        return _fail(str(exc))
    print(f"reppo: wrote {path} (input 'obs' [batch, {policy.obs_size}]; outputs 'action', 'mean', 'std')")
    return 0


@dataclass(frozen=True)
class BenchArgs:
    """Run REPPO and the Brax peers (PPO, SAC at Playground's published settings) on each task of a suite with the
    same env-step budget; write results.csv, runs.csv, summary.md and curve plots."""

    suite: str = "cpu"
    """cpu (5 tasks, about 2 hours at 3 seeds on a 2-core CPU) or paper (the 23 DM Control tasks, 50M steps, GPU)."""
    seeds: int = 3
    """Seeds 1..N of every method (REPPO trains them in one program, Brax one per process)."""
    methods: str = "reppo,ppo,ppo_small,sac"
    """Comma-separated subset of reppo, ppo (Brax PPO, published settings), ppo_small (Brax PPO with REPPO's cpu
    batch geometry) and sac (Brax SAC)."""
    tasks: str | None = None
    """Comma-separated subset of the suite's tasks (default: all)."""
    budget: int | None = None
    """Env steps per run and seed for every task (default: the suite's budgets)."""
    points: int = 10
    """Evaluations per run after the start (rounded to what each method's schedule allows)."""
    out: str | None = None
    """Output folder (default bench/<suite>__<time>)."""
    resume: bool = False
    """Continue the bench in --out: runs that finished there with the same settings are taken over, the rest run."""
    report_only: bool = False
    """Run nothing: recompute summary.md and the plots of the bench in --out from its results.csv and runs.csv
    (--tasks and --methods default to those in results.csv)."""
    bootstrap_reps: int = BOOTSTRAP_REPS
    """Bootstrap resamples of every interval in the summary and plots (rliable's stratified bootstrap, numpy seed
    0)."""


_BENCH_INT_FLAGS = ("--seeds", "--budget", "--points", "--bootstrap-reps")


def _bench_int(flag: str, value: str) -> str:
    """``value`` of an integer flag of bench, scientific notation (5e6) accepted; ValueError when not an integer."""
    value = _integral(value)
    if not value.lstrip("-").isdigit():
        raise ValueError(f"{flag} {value!r} must be a positive integer")
    return value


def _bench_ints(args: list[str]) -> list[str]:
    """``args`` with the values of the integer flags of bench normalised by :func:`_bench_int`."""
    out = []
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if eq and name in _BENCH_INT_FLAGS:
            out.append(f"{name}={_bench_int(name, value)}")
        elif i and args[i - 1] in _BENCH_INT_FLAGS:
            out.append(_bench_int(args[i - 1], arg))
        else:
            out.append(arg)
    return out


_BENCH_RUN_FLAGS = ("--seeds", "--budget", "--points", "--resume", "--no-resume")
"""bench flags that only a run uses."""


def bench_command(args: list[str]) -> int:
    from pathlib import Path

    from reppo.bench.harness import BenchError, plan_bench, report_bench, run_bench
    from reppo.bench.report import SUMMARY_FILE

    try:
        args = _bench_ints(args)
    except ValueError as exc:
        return _fail(str(exc))
    a = tyro.cli(BenchArgs, args=args, prog="reppo bench")
    if a.report_only:
        given = lambda flag: any(arg == flag or arg.startswith(flag + "=") for arg in args)
        wrong = [flag for flag in _BENCH_RUN_FLAGS if given(flag)]
        if wrong:
            return _fail(f"{wrong[0]} does not apply to --report-only; allowed with it: --out, --suite, --tasks, "
                         "--methods, --bootstrap-reps")  # fmt: skip
        try:
            _, paths = report_bench(a.suite, a.methods if given("--methods") else None, a.tasks, a.out,
                                    a.bootstrap_reps)  # fmt: skip
        except (BenchError, ValueError, OSError) as exc:
            return _fail(str(exc))
        print(f"reppo: wrote {Path(a.out) / SUMMARY_FILE}, " + ", ".join(p.name for p in paths))
        return 0
    try:
        plan = plan_bench(a.suite, a.seeds, a.methods, a.tasks, a.budget, a.points, a.out, a.resume, a.bootstrap_reps)
    except BenchError as exc:
        return _fail(str(exc))
    records = run_bench(plan)
    failed = [r for r in records if r.status != "ok"]
    if failed:
        print(f"reppo: {len(failed)} of {len(records)} runs failed (see runs.csv and the summary)", file=sys.stderr)
    return 1 if failed else 0


COMMANDS = {
    "train": train_command,
    "eval": eval_command,
    "video": video_command,
    "plot": plot_command,
    "export": export_command,
    "bench": bench_command,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return _fail(f"unknown command {command!r}; allowed: {', '.join(COMMANDS)}")
    from reppo.training import enable_compilation_cache

    enable_compilation_cache()
    return COMMANDS[command](rest)


if __name__ == "__main__":
    sys.exit(main())
