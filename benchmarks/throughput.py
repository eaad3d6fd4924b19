"""Training throughput of one REPPO configuration: compile time, env steps/s, seconds per iteration split into
rollout / targets / update, and peak resident memory.

    python benchmarks/throughput.py --env CartpoleBalance --preset cpu
    python benchmarks/throughput.py --env CartpoleBalance --preset paper-small --num-envs 1024 --num-steps 32 \
        --num-minibatches 16 --num-epochs 4 --critic-width 512 --actor-width 512 --num-value-samples 64

Each configuration runs in its own process (peak RSS is per process), prints one table, and with ``--json PATH``
appends its figures as one JSON line. Timings are medians over ``--repeats`` iterations after compilation.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import sys
import time

import jax
from _jsonl import append_jsonl  # sibling module of these scripts

from reppo.config import preset_config, resolve
from reppo.envs import make_env
from reppo.rollout import make_rollout


def _timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    return time.perf_counter() - t, out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartpoleBalance")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="iterations run before timing (steady state)")
    parser.add_argument("--json", default=None, help="append the result as a JSON line to this file")
    for name in (
        "num_envs",
        "num_steps",
        "num_minibatches",
        "num_epochs",
        "critic_width",
        "actor_width",
        "num_value_samples",
        "value_chunk_size",
        "critic_depth",
        "actor_depth",
    ):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    args = parser.parse_args(argv)
    overrides = {
        k: v for k, v in vars(args).items() if k not in ("env", "preset", "repeats", "warmup", "json") and v is not None
    }
    config = resolve(dataclasses.replace(preset_config(args.preset), env=args.env, **overrides))
    env = make_env(config.env, config.num_envs, impl=config.impl)
    rollout = make_rollout(config, env)
    learner = rollout.seeded.learner

    collect = jax.jit(rollout.rollout)
    targets = jax.jit(learner.targets)
    update = jax.jit(learner.update)
    full = jax.jit(rollout.iteration)

    state = rollout.start(jax.random.PRNGKey(0)[None])
    t0 = time.perf_counter()
    state, metrics = full(state)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    # Time the steady state: the first rollouts after a reset can be far slower (CheetahRun at 1024 envs: all
    # envs fresh from their stabilising reset), which is not what a long run sees.
    for _ in range(args.warmup):
        state, metrics = full(state)
    jax.block_until_ready(metrics)

    splits = {"rollout": [], "targets": [], "update": [], "iteration": []}
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    one_seed = lambda: jax.tree.map(lambda x: x[0], state.learner)  # the learner's phases run per seed
    _timed(collect, state.learner, state.env_state, keys[:1])  # compile the split phases outside the timings
    _, (_, batch) = _timed(collect, state.learner, state.env_state, keys[:1])
    _, data = _timed(targets, one_seed(), batch, keys[1])
    _timed(update, one_seed(), data, keys[2])
    for _ in range(args.repeats):
        dt, (_, batch) = _timed(collect, state.learner, state.env_state, keys[:1])
        splits["rollout"].append(dt)
        dt, data = _timed(targets, one_seed(), batch, keys[1])
        splits["targets"].append(dt)
        dt, _ = _timed(update, one_seed(), data, keys[2])
        splits["update"].append(dt)
        dt, (state, _) = _timed(full, state)
        splits["iteration"].append(dt)

    med = {k: statistics.median(v) for k, v in splits.items()}
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    result = {
        "env": config.env,
        "preset": config.preset,
        "device": jax.devices()[0].device_kind,
        "num_envs": config.num_envs,
        "num_steps": config.num_steps,
        "num_minibatches": config.num_minibatches,
        "num_epochs": config.num_epochs,
        "critic_width": config.critic_width,
        "K": config.num_value_samples,
        "compile_s": compile_s,
        "sps": config.batch_size / med["iteration"],
        **{f"{k}_s": v for k, v in med.items()},
        "peak_rss_gb": peak_rss_gb,
    }
    print(
        f"\n{config.env} / {config.preset}: {config.num_envs} envs x {config.num_steps} steps, "
        f"{config.num_minibatches} minibatches x {config.num_epochs} epochs, width {config.critic_width}, "
        f"K={config.num_value_samples} ({result['device']}, median of {args.repeats})"
    )
    print(
        f"| {'compile s':>9} | {'env steps/s':>11} | {'iteration s':>11} | {'rollout s':>9} | "
        f"{'targets s':>9} | {'update s':>8} | {'peak RSS GB':>11} |"
    )
    print(f"|{'-' * 11}|{'-' * 13}|{'-' * 13}|{'-' * 11}|{'-' * 11}|{'-' * 10}|{'-' * 13}|")
    print(
        f"| {compile_s:9.1f} | {result['sps']:11,.0f} | {med['iteration']:11.3f} | {med['rollout']:9.3f} | "
        f"{med['targets']:9.3f} | {med['update']:8.3f} | {peak_rss_gb:11.2f} |"
    )
    append_jsonl(args.json, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
