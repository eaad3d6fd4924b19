"""Many seeds in one program (``--num-seeds S``) against S separate runs: compile time, seconds per iteration,
and the projected wall-clock per seed of a whole run.

    python benchmarks/seeds.py --env CartpoleBalance --preset cpu --seeds 1 8

Each seed count runs in its own process (so compile caches and peak memory are per process); the table compares
the wall-clock of training S seeds at once with S sequential single-seed runs of the same budget
(``total_steps`` of the preset), compile included. Timings are medians over ``--repeats`` iterations after
``--warmup`` iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def measure(env_id: str, preset: str, num_seeds: int, warmup: int, repeats: int) -> dict:
    os.environ["REPPO_COMPILATION_CACHE"] = "0"  # measure real compiles
    import jax
    import jax.numpy as jnp

    from reppo.config import preset_config, resolve
    from reppo.envs import make_env
    from reppo.rollout import make_rollout

    config = resolve(preset_config(preset, env=env_id, num_seeds=num_seeds))
    env = make_env(config.env, config.num_envs * num_seeds, impl=config.impl)
    rollout = make_rollout(config, env)
    keys = jnp.stack([jax.random.split(jax.random.PRNGKey(s))[0] for s in range(num_seeds)])
    t = time.perf_counter()
    state = jax.jit(rollout.init)(keys)
    iterate = jax.jit(rollout.iteration, donate_argnums=0).lower(state).compile()
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t
    times = []
    for i in range(warmup + repeats):
        t = time.perf_counter()
        state, metrics = iterate(state)
        jax.block_until_ready(metrics)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    per_iteration = statistics.median(times)
    return {
        "env": env_id,
        "preset": preset,
        "num_seeds": num_seeds,
        "compile_s": compile_s,
        "s_per_iteration": per_iteration,
        "iterations": config.num_iterations,
        "sps": config.batch_size * num_seeds / per_iteration,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartpoleBalance")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child process: one seed count
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(measure(args.env, args.preset, args.one, args.warmup, args.repeats)))
        return
    rows = []
    for s in args.seeds:
        cmd = [sys.executable, __file__, "--env", args.env, "--preset", args.preset, "--one", str(s),
               "--warmup", str(args.warmup), "--repeats", str(args.repeats)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    single = next((r for r in rows if r["num_seeds"] == 1), None)
    print(f"{rows[0]['env']}, {rows[0]['preset']} preset, {rows[0]['iterations']} iterations per run")
    print(f"{'seeds':>5} {'compile s':>9} {'s/iter':>8} {'steps/s':>9} {'RSS GB':>7} {'run wall s':>10} "
          f"{'per seed s':>10} {'S separate runs s':>17} {'speed-up':>8}")  # fmt: skip
    for r in rows:
        wall = r["compile_s"] + r["iterations"] * r["s_per_iteration"]
        separate = (
            r["num_seeds"] * (single["compile_s"] + single["iterations"] * single["s_per_iteration"])
            if single
            else float("nan")
        )
        print(f"{r['num_seeds']:>5} {r['compile_s']:>9.1f} {r['s_per_iteration']:>8.3f} {r['sps']:>9,.0f} "
              f"{r['peak_rss_gb']:>7.2f} {wall:>10.0f} {wall / r['num_seeds']:>10.0f} {separate:>17.0f} "
              f"{separate / wall:>7.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
