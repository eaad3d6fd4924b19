"""How close the update phase of a REPPO iteration comes to the machine's dense-matmul throughput.

    python benchmarks/update_efficiency.py --env CartpoleBalance --preset cpu

The update phase (E epochs of M minibatches: critic step, actor step, dual step; ``REPPO.update``) runs jitted on
the targets of a real rollout. Its FLOPs are XLA's cost analysis of one compiled minibatch step, times the E * M
steps (the analysis of the whole scan would count the loop body once). The reference is
a plain jitted chain of matmuls with the networks' hidden shape, (minibatch rows x width) @ (width x width), at
the same float32 precision. Both are printed as GFLOP/s, and the ratio is the update's share of what the machine
sustains on its dominant operation. Timings are medians over ``--repeats`` calls after one warm-up call.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from _jsonl import append_jsonl  # sibling module of these scripts

from reppo.algo.reppo import make_train
from reppo.config import preset_config, resolve
from reppo.envs import make_env


def _median_s(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartpoleBalance")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=None, help="append the result as a JSON line to this file")
    args = parser.parse_args(argv)

    config = resolve(dataclasses.replace(preset_config(args.preset), env=args.env))
    env = make_env(config.env, config.num_envs, impl=config.impl)
    _, _, algo = make_train(config, env)
    state = jax.jit(algo.init)(jax.random.PRNGKey(0))
    k_rollout, k_targets, k_update = jax.random.split(jax.random.PRNGKey(1), 3)
    _, traj = jax.jit(algo.rollout)(state, k_rollout)
    data = jax.jit(algo.compute_targets)(state, traj, k_targets)

    update = jax.jit(algo.update).lower(state, data, k_update).compile()
    # XLA's cost analysis counts a loop body once, so the FLOPs are those of one minibatch step times E * M.
    minibatch = jax.tree.map(lambda x: x[: config.minibatch_size], data)
    step = jax.jit(algo.update_minibatch).lower(state, minibatch, k_update).compile()
    update_flops = _flops(step) * config.num_epochs * config.num_minibatches
    update_s = _median_s(update, (state, data, k_update), args.repeats)

    rows, width = config.minibatch_size, max(config.critic_width, config.actor_width)
    x = jax.random.normal(jax.random.PRNGKey(2), (rows, width), jnp.float32)
    w = jax.random.normal(jax.random.PRNGKey(3), (width, width), jnp.float32) / width**0.5
    chain = 64

    def matmuls(x, w):  # a dependent chain, so nothing is hoisted or fused away
        return jax.lax.fori_loop(0, chain, lambda _, h: jnp.tanh(h @ w), x)

    plain = jax.jit(matmuls).lower(x, w).compile()
    plain_flops = 2.0 * rows * width * width * chain
    plain_s = _median_s(plain, (x, w), args.repeats * 3)

    result = {
        "env": config.env,
        "preset": config.preset,
        "device": jax.devices()[0].device_kind,
        "cpus": os.cpu_count(),
        "update_gflop": update_flops / 1e9,
        "update_s": update_s,
        "update_gflops": update_flops / update_s / 1e9,
        "matmul_shape": [rows, width, width],
        "matmul_gflops": plain_flops / plain_s / 1e9,
    }
    result["ratio"] = result["update_gflops"] / result["matmul_gflops"]
    print(f"\n{config.env} / {config.preset} ({result['device']}, {result['cpus']} CPUs), median of {args.repeats}")
    print(f"| {'program':<34} | {'GFLOP':>8} | {'s':>8} | {'GFLOP/s':>8} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    e, m = config.num_epochs, config.num_minibatches
    print(f"| {f'update phase ({e} epochs x {m} minibatches)':<34} | {result['update_gflop']:8.2f} | "
          f"{update_s:8.4f} | {result['update_gflops']:8.1f} |")  # fmt: skip
    print(f"| {f'matmul chain {rows}x{width} @ {width}x{width}':<34} | {plain_flops / 1e9:8.2f} | {plain_s:8.4f} | "
          f"{result['matmul_gflops']:8.1f} |")  # fmt: skip
    print(f"update phase reaches {100 * result['ratio']:.0f} % of the plain matmul throughput")
    append_jsonl(args.json, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
