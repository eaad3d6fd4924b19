"""How close the update phase of a REPPO iteration comes to the machine's dense-matmul throughput.

    python benchmarks/update_efficiency.py --env CartpoleBalance --preset cpu

The update phase (E epochs of M minibatches: critic step, actor step, dual step; ``REPPO.update``) runs jitted on
the targets of a real rollout. Its FLOPs are XLA's cost analysis of one compiled minibatch step, times the E * M
steps (the analysis of the whole scan would count the loop body once). The reference is
a plain jitted chain of matmuls with the networks' hidden shape, (minibatch rows x width) @ (width x width), at
the same float32 precision. Both are printed as GFLOP/s, and the ratio is the update's share of what the machine
sustains on its dominant operation. A second comparison times every dot of the compiled minibatch step (read
from its optimised HLO) alone as a plain jitted ``dot_general`` of the same shapes: their summed time over the
update's time is the share of the update that runs at plain matmul speed. Timings are medians over ``--repeats``
calls after one warm-up call.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import math
import os
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from _jsonl import append_jsonl  # sibling module of these scripts

from reppo.config import preset_config, resolve
from reppo.envs import make_env
from reppo.rollout import make_rollout


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


_INSTRUCTION = re.compile(r"%([\w.\-]+) = (\w+)\[([\d,]*)\]")
_DOT = re.compile(r"= (\w+)\[[\d,]*\]\S* dot\(%([\w.\-]+), %([\w.\-]+)\)(.*)")


def _dims(text: str, name: str) -> tuple[int, ...]:
    found = re.search(name + r"=\{([\d,]*)\}", text)
    return tuple(int(v) for v in found.group(1).split(",") if v) if found else ()


def hlo_dots(hlo: str) -> collections.Counter:
    """The dot products of an optimised HLO module (fusions included), counted by (dtype, lhs shape, rhs shape,
    dimension numbers)."""
    shapes = {m.group(1): (m.group(2), tuple(int(v) for v in m.group(3).split(",") if v))
              for m in _INSTRUCTION.finditer(hlo)}  # fmt: skip
    dots = collections.Counter()
    for line in hlo.splitlines():
        found = _DOT.search(line)
        if found is None:
            continue
        dtype, lhs, rhs, rest = found.groups()
        numbers = ((_dims(rest, "lhs_contracting_dims"), _dims(rest, "rhs_contracting_dims")),
                   (_dims(rest, "lhs_batch_dims"), _dims(rest, "rhs_batch_dims")))  # fmt: skip
        dots[(dtype, shapes[lhs][1], shapes[rhs][1], numbers)] += 1
    return dots


def dot_flops(lhs: tuple[int, ...], rhs: tuple[int, ...], numbers) -> float:
    """2 x (output elements) x (contracted length) of a dot_general."""
    (lc, rc), (lb, rb) = numbers
    free_lhs = [d for i, d in enumerate(lhs) if i not in lc and i not in lb]
    free_rhs = [d for i, d in enumerate(rhs) if i not in rc and i not in rb]
    out = math.prod(free_lhs) * math.prod(free_rhs) * math.prod(lhs[i] for i in lb)
    return 2.0 * out * math.prod(lhs[i] for i in lc)


def plain_dot_seconds(dtype: str, lhs, rhs, numbers, repeats: int, copies: int = 16) -> float:
    """Seconds of one plain jitted dot_general of these shapes: ``copies`` independent dots in one program (so
    dispatch is amortised), median over ``repeats`` calls, divided by ``copies``."""
    keys = jax.random.split(jax.random.PRNGKey(4), 2 * copies)
    dt = jnp.dtype({"f32": "float32", "bf16": "bfloat16", "f16": "float16", "f64": "float64"}[dtype])
    a = [jax.random.normal(k, lhs, dt) for k in keys[:copies]]
    b = [jax.random.normal(k, rhs, dt) for k in keys[copies:]]
    program = jax.jit(lambda a, b: [jax.lax.dot_general(x, y, numbers) for x, y in zip(a, b, strict=True)])
    return _median_s(program.lower(a, b).compile(), (a, b), repeats) / copies


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartpoleBalance")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=None, help="append the result as a JSON line to this file")
    args = parser.parse_args(argv)

    config = resolve(dataclasses.replace(preset_config(args.preset), env=args.env))
    env = make_env(config.env, config.num_envs, impl=config.impl)
    rollout = make_rollout(config, env)
    algo = rollout.seeded.learner  # the update phase of one seed
    start = rollout.start(jax.random.PRNGKey(0)[None])
    k_rollout, k_targets, k_update = jax.random.split(jax.random.PRNGKey(1), 3)
    _, batch = jax.jit(rollout.rollout)(start.learner, start.env_state, k_rollout[None])
    state = jax.tree.map(lambda x: x[0], start.learner)
    data = jax.jit(algo.targets)(state, batch, k_targets)

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

    # The same shapes: every dot of the compiled minibatch step (forward, both backward products, heads, inputs)
    # timed alone as a plain jitted dot_general. Their summed time x E x M is what the update phase would take if it
    # ran at plain matmul speed and did nothing else.
    dots = hlo_dots(step.as_text())
    steps = config.num_epochs * config.num_minibatches
    table = []
    for (dtype, lhs, rhs, numbers), count in sorted(dots.items(), key=lambda kv: -dot_flops(*kv[0][1:])):
        seconds = plain_dot_seconds(dtype, lhs, rhs, numbers, args.repeats * 3)
        table.append((dtype, lhs, rhs, numbers, count, dot_flops(lhs, rhs, numbers), seconds))
    dots_flops = steps * sum(count * flops for *_, count, flops, _ in table)
    dots_s = steps * sum(count * seconds for *_, count, _, seconds in table)
    result.update(
        {
            "dot_kinds": len(table),
            "dots_per_step": sum(dots.values()),
            "dot_gflop": dots_flops / 1e9,
            "plain_dots_s": dots_s,
            "update_dot_gflops": dots_flops / update_s / 1e9,
            "plain_dots_gflops": dots_flops / dots_s / 1e9,
            "ratio_same_shapes": dots_s / update_s,
        }
    )
    print(f"\n{config.env} / {config.preset} ({result['device']}, {result['cpus']} CPUs), median of {args.repeats}")
    print(f"| {'program':<34} | {'GFLOP':>8} | {'s':>8} | {'GFLOP/s':>8} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    e, m = config.num_epochs, config.num_minibatches
    print(f"| {f'update phase ({e} epochs x {m} minibatches)':<34} | {result['update_gflop']:8.2f} | "
          f"{update_s:8.4f} | {result['update_gflops']:8.1f} |")  # fmt: skip
    print(f"| {f'matmul chain {rows}x{width} @ {width}x{width}':<34} | {plain_flops / 1e9:8.2f} | {plain_s:8.4f} | "
          f"{result['matmul_gflops']:8.1f} |")  # fmt: skip
    print(f"update phase reaches {100 * result['ratio']:.0f} % of the plain matmul throughput")
    print(f"\nThe {result['dots_per_step']} dots of one minibatch step ({len(table)} shapes), each timed as a plain "
          "jitted dot_general:")  # fmt: skip
    print(f"| {'lhs':>14} | {'rhs':>14} | {'contract':>9} | {'count':>5} | {'MFLOP':>7} | {'us':>8} | {'GFLOP/s':>8} |")
    print(f"|{'-' * 16}|{'-' * 16}|{'-' * 11}|{'-' * 7}|{'-' * 9}|{'-' * 10}|{'-' * 10}|")
    for _, lhs, rhs, numbers, count, flops, seconds in table:
        contract = f"{numbers[0][0]}x{numbers[0][1]}"
        print(f"| {str(lhs):>14} | {str(rhs):>14} | {contract:>9} | {count:5d} | {flops / 1e6:7.2f} | "
              f"{seconds * 1e6:8.1f} | {flops / seconds / 1e9:8.1f} |")  # fmt: skip
    print(f"| {'update phase, its dots only':<34} | {result['dot_gflop']:8.2f} | {update_s:8.4f} | "
          f"{result['update_dot_gflops']:8.1f} |")  # fmt: skip
    print(f"| {'the same dots, plain':<34} | {result['dot_gflop']:8.2f} | {dots_s:8.4f} | "
          f"{result['plain_dots_gflops']:8.1f} |")  # fmt: skip
    print(
        f"update phase reaches {100 * result['ratio_same_shapes']:.0f} % of the plain matmul throughput of its own "
        "dot shapes"
    )
    append_jsonl(args.json, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
