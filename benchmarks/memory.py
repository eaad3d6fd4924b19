"""Peak memory of REPPO at ``paper-small`` against Brax SAC at Playground's published settings, same task.

    python benchmarks/memory.py --task CartpoleBalance

Each method runs in its own child process (the ``reppo bench`` worker: ``python -m reppo.bench.worker``) for a few
iterations: REPPO ``--reppo-iterations`` iterations of 1024 envs x 32 steps, Brax SAC its replay prefill
(8,192 env steps) plus ``--sac-actor-steps`` actor steps of 128 envs with 8 gradient updates each. Brax SAC
allocates its whole replay buffer (4,194,304 transitions) before the first step, and REPPO's largest buffers (the
rollout batch, the value targets) exist from its first iteration, so a few iterations reach each method's peak.
Peak host RSS is the child's ``ru_maxrss`` (``os.wait4``); on a GPU the device peak is the allocator's
``peak_bytes_in_use``. Prints a table and the ratio against the issue's target (REPPO below 1/5 of SAC).

    python benchmarks/memory.py --task CartpoleBalance --breakdown [--set value_chunk_size=4096 ...]

instead prints where REPPO's memory goes, without running anything: XLA's memory analysis
(``compiled.memory_analysis()``) of each program a ``paper-small`` run compiles, on this process's backend, and
the bytes of the train state by part. A program's arguments and outputs are the buffers it reads and writes;
its temporaries are what it allocates while it runs. The iteration donates the state, so its output reuses
the argument's buffers (``aliased``) and its peak is about arguments + temporaries.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import jax
import numpy as np

from reppo.bench.harness import run_unit
from reppo.bench.runners import RunSpec, min_budget, published_config
from reppo.config import Config, ConfigError, preset_config, resolve
from reppo.envs import UnknownEnvError, make_env
from reppo.evaluate import make_evaluate
from reppo.rollout import make_rollout

TARGET_RATIO = 5.0


def env_step_budgets(task: str, reppo_iterations: int, sac_actor_steps: int) -> dict[str, int]:
    """Env steps per method: REPPO ``reppo_iterations`` paper-small iterations; Brax SAC its replay prefill plus
    ``sac_actor_steps`` actor steps (``min_budget`` already holds one)."""
    sac = published_config("sac", task)
    actor_step = sac["num_envs"] * sac["action_repeat"]
    return {
        "reppo": reppo_iterations * preset_config("paper-small").batch_size,
        "sac": min_budget("sac", task, "paper-small", {}) + (sac_actor_steps - 1) * actor_step,
    }


def tree_bytes(tree) -> int:
    """Bytes of every array (or ShapeDtypeStruct) leaf of ``tree``."""
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


PROGRAMS = ("init", "rollout", "targets", "update", "iteration", "evaluate")


def xla_breakdown(task: str, preset: str = "paper-small", programs=PROGRAMS, **overrides) -> tuple[dict, dict]:
    """XLA's memory analysis of ``programs`` of a REPPO run on ``task`` (compiled for this process's backend;
    nothing runs), and the train state's bytes by part. Returns ({program: {"arguments", "outputs", "aliased",
    "temporaries"}}, {part: bytes}), in bytes. Outputs count a table of 8-byte pointers besides the arrays."""
    config = resolve(preset_config(preset, env=task, **overrides))
    rollout = make_rollout(config, make_env(task, config.num_envs, impl=config.impl))
    algo = rollout.seeded.learner  # targets and update of one seed
    keys = jax.random.PRNGKey(0)[None]
    state = rollout.abstract_state(keys)
    learner = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), state.learner)
    _, traj = jax.eval_shape(rollout.rollout, state.learner, state.env_state, keys)
    data = jax.eval_shape(algo.targets, learner, traj, keys[0])
    eval_env = make_env(task, config.eval_envs, impl=config.impl, randomize_steps=False)
    lower = {
        "init": lambda: jax.jit(rollout.init).lower(keys),
        "rollout": lambda: jax.jit(rollout.rollout).lower(state.learner, state.env_state, keys),
        "targets": lambda: jax.jit(algo.targets).lower(learner, traj, keys[0]),
        "update": lambda: jax.jit(algo.update).lower(learner, data, keys[0]),
        "iteration": lambda: jax.jit(rollout.iteration, donate_argnums=0).lower(state),
        "evaluate": lambda: jax.jit(make_evaluate(algo.actor, eval_env, 1)).lower(
            state.learner.actor_params, state.learner.obs_stats, keys[0]
        ),
    }
    analysis = {}
    for name in programs:
        m = lower[name]().compile().memory_analysis()
        analysis[name] = {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
                          "aliased": m.alias_size_in_bytes, "temporaries": m.temp_size_in_bytes}  # fmt: skip
    s = state.learner
    parts = {
        "actor parameters + Adam": tree_bytes((s.actor_params, s.actor_opt)),
        "critic parameters + Adam": tree_bytes((s.critic_params, s.critic_opt)),
        "env state": tree_bytes(state.env_state),
        "duals, statistics, key, counter": tree_bytes(
            (s.log_duals, s.dual_opt, s.obs_stats, s.critic_obs_stats, state.key, state.iteration)
        ),
        "rollout (T x N transitions)": tree_bytes(traj),
        "batch (targets, pi_old, aux targets)": tree_bytes(data),
        "  of which aux targets phi(x', a')": tree_bytes(data.next_embedding),
    }
    return analysis, parts


def print_breakdown(task: str, overrides: dict) -> None:
    analysis, parts = xla_breakdown(task, **overrides)
    mib = lambda b: f"{b / 2**20:.1f}"
    setting = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "as preset"
    print(f"{task} / paper-small ({setting}), XLA memory analysis on {jax.devices()[0].device_kind} (MiB)")
    print("| program | arguments | outputs | aliased | temporaries |\n|---|---|---|---|---|")
    for name, m in analysis.items():
        print(f"| {name} | {mib(m['arguments'])} | {mib(m['outputs'])} | {mib(m['aliased'])} | "
              f"{mib(m['temporaries'])} |")  # fmt: skip
    print("\n| part | MiB |\n|---|---|")
    for name, b in parts.items():
        print(f"| {name} | {mib(b)} |")


def _override(text: str) -> tuple[str, int | float]:
    key, _, value = text.partition("=")
    if not value:
        raise argparse.ArgumentTypeError(f"--set {text!r} must be KEY=NUMBER, e.g. value_chunk_size=4096")
    try:
        return key, int(value) if value.lstrip("-").isdigit() else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--set {text!r}: {value!r} is not a number") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="memory.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="CartpoleBalance")
    parser.add_argument("--reppo-iterations", type=int, default=2)
    parser.add_argument("--sac-actor-steps", type=int, default=10)
    parser.add_argument("--out", default=None, help="folder for the runs' files (default: a temporary folder)")
    parser.add_argument("--breakdown", action="store_true", help="print XLA's memory analysis of REPPO instead")
    parser.add_argument("--set", type=_override, action="append", default=[], metavar="KEY=NUMBER",
                        help="with --breakdown: a Config field on top of paper-small (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.breakdown:
        fields = {f.name for f in dataclasses.fields(Config)}
        for key, _ in args.set:
            if key not in fields:
                parser.error(f"--set {key!r} is not a field of reppo.config.Config (see `reppo train --help`)")
        try:
            print_breakdown(args.task, dict(args.set))
        except (ConfigError, UnknownEnvError) as e:
            parser.error(str(e))
        return

    reppo = preset_config("paper-small")
    sac = published_config("sac", args.task)
    budgets = env_step_budgets(args.task, args.reppo_iterations, args.sac_actor_steps)
    settings = {
        "reppo": f"paper-small: {reppo.num_envs} envs x {reppo.num_steps} steps, width {reppo.critic_width}, "
        f"K={reppo.num_value_samples}",
        "sac": f"published: {sac['num_envs']} envs, batch {sac['batch_size']}, replay {sac['max_replay_size']:,}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        records = {}
        for method in ("reppo", "sac"):
            spec = RunSpec(task=args.task, method=method, seeds=(1,), budget=budgets[method], points=1,
                           folder=str(root / f"{args.task}__{method}"), reppo_preset="paper-small")  # fmt: skip
            records[method] = run_unit(spec)
            if records[method].status != "ok":
                raise SystemExit(f"memory.py: {method} failed: {records[method].note}")

    print(f"{'method':<7}{'settings':<62}{'env steps':>10}{'peak RSS GiB':>14}{'device GiB':>12}{'process s':>11}")
    for method, r in records.items():
        device = "-" if r.device_peak_mb is None else f"{r.device_peak_mb / 1024:.2f}"
        print(f"{method:<7}{settings[method]:<62}{budgets[method]:>10,}{r.peak_rss_mb / 1024:>14.2f}{device:>12}"
              f"{r.process_s:>11.0f}")  # fmt: skip
    key = "device_peak_mb" if records["reppo"].device_peak_mb and records["sac"].device_peak_mb else "peak_rss_mb"
    a, b = getattr(records["reppo"], key), getattr(records["sac"], key)
    verdict = "met" if a < b / TARGET_RATIO else "MISSED"
    print(f"\n{args.task}: REPPO / SAC {key.removesuffix('_mb')} = {a / b:.2f} "
          f"(target < {1 / TARGET_RATIO:.2f}): {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
