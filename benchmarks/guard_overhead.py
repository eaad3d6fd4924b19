"""Cost of the NaN/Inf guard (``--max-bad-iterations``): seconds per iteration with the guard compiled in and out,
and the cost of the host loop reading one ``health/rolled_back`` scalar per iteration.

    python benchmarks/guard_overhead.py --env CartpoleBalance --preset cpu

Both programs are compiled with argument donation as ``reppo train`` does, warmed up, then timed in blocks of
``--block`` iterations dispatched back to back, alternately (off, on, on, off, ...) so that load from other
processes hits both alike. The figures are medians over ``--repeats`` blocks, and the mean of the paired ratios
(adjacent blocks) comes with a 95 % bootstrap interval. On a shared CPU the iteration time varies by more than the
guard costs, so the guard's own work (the finiteness checks, the rollback select and the per-env mask with its
no-op ``reset_where``) is also timed alone, jitted on the real shapes (median of 50 calls, also split into its two
parts), and reported as a fraction of the unguarded iteration. The host-read cost compares back-to-back iterations
of the guarded program without any device-to-host read (one wait at the end) against the same loop reading the
flag right after each iteration, and reading it one iteration late (what ``reppo train`` does, so that the next
iteration is already queued while the host waits).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

import jax
from _jsonl import append_jsonl  # sibling module of these scripts

from reppo.algo import guard
from reppo.algo.learner import may_overflow
from reppo.bench.report import mean_ci
from reppo.config import preset_config, resolve
from reppo.envs import make_env
from reppo.rollout import bad_envs_key, iteration_keys, make_rollout


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartpoleBalance")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--max-bad-iterations", type=int, default=3, help="the guarded setting (> 0)")
    parser.add_argument("--repeats", type=int, default=25, help="timed blocks of each program")
    parser.add_argument("--block", type=int, default=5, help="iterations per timed block")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--loops", type=int, default=4, help="host-loop pairs (5 iterations each) to time")
    parser.add_argument("--json", default=None, help="append the result as a JSON line to this file")
    args = parser.parse_args(argv)
    if args.max_bad_iterations < 1:
        parser.error("--max-bad-iterations must be > 0 (the guarded setting)")

    base = resolve(dataclasses.replace(preset_config(args.preset), env=args.env))
    env = make_env(base.env, base.num_envs, impl=base.impl)
    programs, states, compile_s = {}, {}, {}
    for name, max_bad in (("off", 0), ("on", args.max_bad_iterations)):
        rollout = make_rollout(dataclasses.replace(base, max_bad_iterations=max_bad), env)
        state = rollout.start(jax.random.PRNGKey(0)[None])
        t = time.perf_counter()
        programs[name] = jax.jit(rollout.iteration, donate_argnums=0).lower(state).compile()
        compile_s[name] = time.perf_counter() - t
        for _ in range(args.warmup):
            state, metrics = programs[name](state)
        states[name] = jax.block_until_ready(state)

    times: dict[str, list[float]] = {"off": [], "on": []}  # seconds per iteration, one entry per block
    for i in range(args.repeats):
        for name in ("off", "on") if i % 2 == 0 else ("on", "off"):  # ABBA order: no position bias
            t = time.perf_counter()
            for _ in range(args.block):  # dispatched back to back, as reppo train runs them
                states[name], metrics = programs[name](states[name])
            jax.block_until_ready((states[name], metrics))
            times[name].append((time.perf_counter() - t) / args.block)

    # The guard's own work, alone, on the real shapes of seed 0 (rollout is the guarded one).
    one_seed = lambda tree: jax.tree.map(lambda x: x[0], tree)
    old = states["on"]
    keys = iteration_keys(old.key)
    env_state, batch = jax.jit(rollout.rollout)(old.learner, old.env_state, keys.rollout)
    learner = rollout.seeded.learner
    new, metrics = jax.jit(learner.learn)(one_seed(old.learner), batch, keys.learn[0])
    check = lambda old, new, batch, metrics: guard.check(old, new, batch, metrics, may_overflow)

    def env_mask_and_reset(batch, env_state, key):
        bad = guard.bad_envs(batch, env_state.obs, env_state.critic_obs)
        return env.reset_where(env_state, bad, key), bad

    @jax.jit
    def guard_alone(old, new, batch, metrics, env_state, key):
        return check(old, new, batch, metrics), env_mask_and_reset(batch, env_state, key)

    def median_call_s(fn, *args) -> float:
        jax.block_until_ready(fn(*args))
        calls = []
        for _ in range(50):
            t = time.perf_counter()
            jax.block_until_ready(fn(*args))
            calls.append(time.perf_counter() - t)
        return statistics.median(calls)

    reset_key = bad_envs_key(keys.rollout)
    old_learner = one_seed(old.learner)
    parts = {
        "checks_and_select": median_call_s(jax.jit(check), old_learner, new, batch, metrics),
        "env_mask_and_reset": median_call_s(jax.jit(env_mask_and_reset), batch, env_state, reset_key),
    }
    guard_s = median_call_s(guard_alone, old_learner, new, batch, metrics, env_state, reset_key)

    # Host loop: back-to-back dispatch vs reading the flags of iteration i right after iteration i (a wait per
    # iteration) vs reading them after iteration i + 1 has been dispatched (as reppo train does).
    modes = ("no_read", "read_now", "read_lagged")
    loops: dict[str, list[float]] = {mode: [] for mode in modes}
    dispatch = []  # host time of one call (returns before the iteration has run)
    state = states["on"]
    for _ in range(args.loops):
        for mode in modes:
            t = time.perf_counter()
            previous = None
            for _ in range(5):
                t_call = time.perf_counter()
                state, metrics = programs["on"](state)
                dispatch.append(time.perf_counter() - t_call)
                if mode == "read_now":
                    float(metrics["health/rolled_back"])
                elif mode == "read_lagged":
                    if previous is not None:
                        float(previous["health/rolled_back"])
                    previous = metrics
            jax.block_until_ready(state)
            loops[mode].append((time.perf_counter() - t) / 5)

    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    ratios = [on / off for on, off in zip(times["on"], times["off"], strict=True)]  # blocks adjacent in time
    ratio = statistics.median(ratios)
    mean_ratio, low, high = mean_ci(ratios)  # 95 % bootstrap interval of the mean paired ratio
    loop = {k: statistics.median(v) for k, v in loops.items()}
    result = {
        "env": base.env,
        "preset": base.preset,
        "device": jax.devices()[0].device_kind,
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "compile_off_s": compile_s["off"],
        "compile_on_s": compile_s["on"],
        "iteration_off_s": med["off"],
        "iteration_on_s": med["on"],
        "guard_overhead_pct": 100 * (med["on"] / med["off"] - 1),
        "paired_ratio_pct": 100 * (ratio - 1),
        "mean_paired_ratio_pct": 100 * (mean_ratio - 1),
        "mean_paired_ratio_ci95_pct": [100 * (low - 1), 100 * (high - 1)],
        "block": args.block,
        "iteration_off_min_s": best["off"],
        "iteration_on_min_s": best["on"],
        "guard_alone_s": guard_s,
        "guard_alone_pct": 100 * guard_s / med["off"],
        "guard_parts_s": parts,
        "loop_no_read_s": loop["no_read"],
        "loop_read_now_s": loop["read_now"],
        "loop_read_lagged_s": loop["read_lagged"],
        "read_now_overhead_pct": 100 * (loop["read_now"] / loop["no_read"] - 1),
        "read_lagged_overhead_pct": 100 * (loop["read_lagged"] / loop["no_read"] - 1),
        "dispatch_s": statistics.median(dispatch),
        "all_off_s": times["off"],
        "all_on_s": times["on"],
    }
    print(
        f"\n{base.env} / {base.preset}: {base.num_envs} envs x {base.num_steps} steps ({result['device']}, "
        f"{result['cpus']} CPUs, load average {result['load_avg_1m']:.2f}), median of {args.repeats}"
    )
    print(f"| {'guard':>5} | {'compile s':>9} | {'iteration s':>11} | {'min s':>7} |")
    print(f"|{'-' * 7}|{'-' * 11}|{'-' * 13}|{'-' * 9}|")
    for name in ("off", "on"):
        print(f"| {name:>5} | {compile_s[name]:9.1f} | {med[name]:11.4f} | {best[name]:7.4f} |")
    print(
        f"end to end: median on / median off - 1 = {result['guard_overhead_pct']:+.2f} %, median of paired ratios - 1 "
        f"= {result['paired_ratio_pct']:+.2f} %"
    )
    print(
        f"mean of paired ratios - 1 = {result['mean_paired_ratio_pct']:+.2f} %, 95 % bootstrap interval "
        f"[{100 * (low - 1):+.2f}, {100 * (high - 1):+.2f}] % ({args.repeats} pairs of {args.block}-iteration blocks)"
    )
    print(f"guard work alone: {1e3 * guard_s:.2f} ms = {result['guard_alone_pct']:.2f} % of the unguarded iteration "
          f"(checks and rollback select {1e3 * parts['checks_and_select']:.2f} ms, per-env mask and reset_where "
          f"{1e3 * parts['env_mask_and_reset']:.2f} ms)")  # fmt: skip
    print(
        f"host loop, s/iteration (median of {args.loops} loops of 5): no read {loop['no_read']:.4f}; "
        f"health/rolled_back read after its own iteration {loop['read_now']:.4f} "
        f"({result['read_now_overhead_pct']:+.2f} %), read one iteration late as reppo train does "
        f"{loop['read_lagged']:.4f} ({result['read_lagged_overhead_pct']:+.2f} %); "
        f"host dispatch of one call {1e3 * result['dispatch_s']:.2f} ms"
    )
    append_jsonl(args.json, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
