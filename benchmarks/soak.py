"""Soak test of checkpoints and resume: kill a training run with SIGKILL at random moments, resume it each time,
and check that the final state equals that of an uninterrupted run, bit for bit.

    python benchmarks/soak.py --total-steps 1e6 --kills 5 --out /tmp/soak

Both runs use the real `reppo train` command (CartpoleBalance, cpu preset unless told otherwise). The first kill
lands at a random moment of start-up (before compilation ends); every later one at a uniformly random moment
up to ``--max-delay`` seconds after the process reports its compilation, i.e. during training, evaluation or a
checkpoint write. Prints one row per kill and the verdict.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

TIMING = {"wall_s", "perf/sps"}


def _latest(run_dir: Path) -> int:
    folder = run_dir / "checkpoints"
    steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(steps, default=0)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _final_state(run_dir: Path):
    from reppo.checkpoint import Checkpointer
    from reppo.config import load_config, resolve
    from reppo.envs import make_env
    from reppo.rollout import make_rollout

    config = resolve(load_config(run_dir))
    rollout = make_rollout(config, make_env(config.env, config.num_envs, impl=config.impl))
    abstract = rollout.abstract_state(jax.random.PRNGKey(0)[None])
    state, meta = Checkpointer(run_dir, create=False).restore(abstract)
    return state, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartpoleBalance")
    parser.add_argument("--total-steps", default="1e6")
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--max-delay", type=float, default=30.0, help="seconds after compilation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--out", default="/tmp/reppo-soak")
    args = parser.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    flags = ["--env", args.env, "--total-steps", args.total_steps, "--checkpoint-every", str(args.checkpoint_every),
             "--no-progress"]  # fmt: skip
    reppo = [sys.executable, "-m", "reppo.cli", "train"]

    t = time.perf_counter()
    subprocess.run([*reppo, *flags, "--run-dir", str(out / "reference")], check=True, capture_output=True)
    print(f"uninterrupted run: {time.perf_counter() - t:.0f} s")

    rng = random.Random(args.seed)
    run = out / "killed"
    print(f"{'kill':>4} {'at':>21} {'checkpoint before':>17} {'checkpoint after':>16} {'exit':>5}")
    command = [*reppo, *flags, "--run-dir", str(run)]
    for k in range(1, args.kills + 1):
        before = _latest(run)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if k == 1:
            delay, phase = rng.uniform(1.0, 8.0), "start-up"
        else:
            for line in proc.stdout:  # wait for "reppo: compiled in ..."
                if "compiled in" in line:
                    break
            delay, phase = rng.uniform(0.0, args.max_delay), "after compile"
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        print(f"{k:>4} {delay:>5.1f} s {phase:<13} {before:>17} {_latest(run):>16} {proc.returncode:>5}")
        command = [*reppo, "--resume", str(run)]
    t = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    print(f"final resume to the end: {time.perf_counter() - t:.0f} s")

    ref_state, ref_meta = _final_state(out / "reference")
    state, meta = _final_state(run)
    leaves = list(zip(jax.tree.leaves(ref_state), jax.tree.leaves(state), strict=True))
    same_state = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in leaves)
    same_rows = _rows(out / "reference") == _rows(run)
    print(f"final iteration {meta['iteration']} (reference {ref_meta['iteration']}), {len(leaves)} state arrays")
    print(f"state bitwise equal: {same_state}; metrics.csv equal (timings aside): {same_rows}")
    return 0 if same_state and same_rows and meta["iteration"] == ref_meta["iteration"] else 1


if __name__ == "__main__":
    sys.exit(main())
