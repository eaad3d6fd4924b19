"""Env steps per second of one run split over 1, 2, ... devices (``--devices``), and the cost of the sharded
program itself on one device.

    python benchmarks/scaling.py --env CartpoleBalance --preset cpu --devices 1 2      # CPU: devices are forced
    python benchmarks/scaling.py --env CheetahRun --preset paper-small --devices 1 2 4 8  # on a multi-GPU machine

Each device count runs in its own process. On CPU the devices are made with
``XLA_FLAGS=--xla_force_host_platform_device_count=D``, and they share the same cores, so the CPU rows measure the
sharded path's overhead, not a speed-up. Row ``1 (plain)`` is the program without a mesh: no shardings, as before
``reppo.parallel`` existed. Its ratio to row ``1`` is the overhead of the sharded path on one device. Timings are
medians over ``--repeats`` iterations after ``--warmup``; the plain and sharded programs of the one-device
comparison run in the same process, alternately, so machine load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _jsonl import append_jsonl  # sibling module of these scripts


def measure(env_id: str, preset: str, devices: int, warmup: int, repeats: int) -> dict:
    import jax

    from reppo import parallel
    from reppo.config import preset_config, resolve
    from reppo.envs import make_env
    from reppo.rollout import make_rollout

    config = resolve(preset_config(preset, env=env_id, devices=devices))
    env = make_env(config.env, config.num_envs, impl=config.impl)
    keys = jax.random.PRNGKey(0)[None]
    programs = {}
    variants = ("plain", "sharded") if devices == 1 else ("sharded",)
    for variant in variants:
        mesh = parallel.make_mesh(devices) if variant == "sharded" else None
        rollout = make_rollout(config, env, mesh)
        iteration = rollout.iteration
        state = parallel.to_host(rollout.start(keys))
        t = time.perf_counter()
        if mesh is None:
            state = jax.device_put(state)
            compiled = jax.jit(iteration, donate_argnums=0).lower(state).compile()
        else:
            shardings = parallel.state_shardings(state, mesh, env.num_envs)
            state = parallel.put(state, shardings)
            compiled = parallel.jit_iteration(iteration, shardings, mesh).lower(state).compile()
        compile_s = time.perf_counter() - t
        for _ in range(warmup):
            state, _ = compiled(state)
        programs[variant] = {"compiled": compiled, "state": jax.block_until_ready(state), "compile_s": compile_s}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for variant in variants:  # alternately
            p = programs[variant]
            t = time.perf_counter()
            p["state"], metrics = p["compiled"](p["state"])
            jax.block_until_ready(metrics)
            times[variant].append(time.perf_counter() - t)
    rows = []
    for variant in variants:
        s = statistics.median(times[variant])
        rows.append({
            "env": env_id, "preset": preset, "devices": devices, "variant": variant,
            "device_kind": jax.devices()[0].device_kind, "compile_s": programs[variant]["compile_s"],
            "s_per_iteration": s, "sps": config.batch_size / s, "times": times[variant],
        })  # fmt: skip
    return {"rows": rows}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartpoleBalance")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", default=None, help="append the rows as JSON lines to this file")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:
        print(json.dumps(measure(args.env, args.preset, args.child, args.warmup, args.repeats)))
        return []

    rows, forced = [], not _has_accelerator()
    for devices in args.devices:
        env = dict(os.environ)
        if forced:
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
        cmd = [sys.executable, __file__, "--child", str(devices), "--env", args.env, "--preset", args.preset,
               "--warmup", str(args.warmup), "--repeats", str(args.repeats)]  # fmt: skip
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        rows += json.loads(out.strip().splitlines()[-1])["rows"]

    print(f"\n{args.env} / {args.preset} ({rows[0]['device_kind']}, {os.cpu_count()} CPUs), median of {args.repeats}")
    print(f"| {'devices':>12} | {'compile s':>9} | {'s/iteration':>11} | {'env steps/s':>11} | {'vs 1 device':>11} |")
    print(f"|{'-' * 14}|{'-' * 11}|{'-' * 13}|{'-' * 13}|{'-' * 13}|")
    base = next((r for r in rows if r["devices"] == 1 and r["variant"] == "sharded"), rows[0])
    for r in rows:
        name = f"{r['devices']} (plain)" if r["variant"] == "plain" else str(r["devices"])
        print(f"| {name:>12} | {r['compile_s']:9.1f} | {r['s_per_iteration']:11.4f} | {r['sps']:11,.0f} | "
              f"{r['sps'] / base['sps']:10.2f}x |")  # fmt: skip
    plain = next((r for r in rows if r["variant"] == "plain"), None)
    if plain is not None:
        paired = statistics.median(s / p for s, p in zip(base["times"], plain["times"], strict=True))
        median = base["s_per_iteration"] / plain["s_per_iteration"]
        print(f"sharded path on one device vs plain: median {100 * (median - 1):+.2f} %, "
              f"paired {100 * (paired - 1):+.2f} %")  # fmt: skip
    append_jsonl(args.json, *rows)
    return rows


def _has_accelerator() -> bool:
    """Whether JAX sees a GPU/TPU (probed in a subprocess, so this process does not initialise JAX)."""
    probe = "import jax; print(jax.default_backend())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
    return out not in ("", "cpu")


if __name__ == "__main__":
    main(sys.argv[1:])
