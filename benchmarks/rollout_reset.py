"""Rollout cost of the auto-reset wrapper variants (and what a reset costs), on the current JAX backend.

One timed run = ``prepare_rollout`` + a ``lax.scan`` of T steps with uniform random actions, jitted together
the way the trainer calls them; every run continues from the same variant's previous state, so resets happen
at the steady-state rate (randomised step counters). The variants of one env are compiled first and then
timed in interleaved rounds (A B C A B C ...), so load from other processes on a shared machine hits them
alike. Prints the median seconds per rollout, env steps/s = num_envs * T / median, and the median CPU time
of this process per rollout.

Variants: ``raw`` (Playground step only, no time limit or reset: the lower bound), ``naive`` (fresh reset of
all envs every step, ``where``-selected), ``direct`` (reset only the finished envs inside the step, chunked)
and ``pool`` (our default: reset pool refreshed once per rollout). ``pool/cK`` is the pool with
``reset_chunk_size=K`` (see ``--chunks``).

``--diagnose`` also times the pieces: a batched reset, a batched step from mid-episode states, and a batched
step from freshly reset states (the solver warm-start hypothesis).

    PYTHONPATH=src python benchmarks/rollout_reset.py --envs CheetahRun CartpoleBalance --num-envs 512 --T 16
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from reppo.envs import make_env


def _timed(fn, *args):
    t0, c0 = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0, time.process_time() - c0


def rollout_fn(env, T: int, variant: str):
    n, a = env.num_envs, env.action_size

    def actions(key):
        return jax.random.uniform(key, (T, n, a), minval=-1.0, maxval=1.0)

    if variant == "raw":

        @jax.jit
        def run(state, key):
            def body(inner, act):
                inner = jax.vmap(env.env.step)(inner, act)
                return inner, inner.reward

            inner, rewards = jax.lax.scan(body, state.inner, actions(key))
            return state.replace(inner=inner), rewards.sum()

        return run

    @jax.jit
    def run(state, key):
        k_prep, k_act = jax.random.split(key)
        state = env.prepare_rollout(state, k_prep)

        def body(s, act):
            s, res = env.step(s, act)
            return s, res.reward

        state, rewards = jax.lax.scan(body, state, actions(k_act))
        return state, rewards.sum()

    return run


def diagnose(env_id: str, num_envs: int, impl: str, runs: int) -> None:
    env = make_env(env_id, num_envs, impl=impl, reset_strategy="direct")
    raw = env.env
    vreset = jax.jit(lambda k: jax.vmap(raw.reset)(jax.random.split(k, num_envs)))
    vstep = jax.jit(jax.vmap(raw.step))
    act = jnp.zeros((num_envs, env.action_size))
    fresh, _, _ = _timed(vreset, jax.random.PRNGKey(0))
    mid = fresh
    for _ in range(50):
        mid = vstep(mid, act)
    t_reset, t_fresh, t_mid = [], [], []
    for i in range(runs):  # interleaved
        t_reset.append(_timed(vreset, jax.random.PRNGKey(i + 1))[1])
        t_fresh.append(_timed(vstep, fresh, act)[1])
        t_mid.append(_timed(vstep, mid, act)[1])
    r, f, m = (statistics.median(x) for x in (t_reset, t_fresh, t_mid))
    print(
        f"{env_id:<16} {num_envs:>6}  reset {r:8.4f}s  step(mid-episode) {m:8.4f}s  "
        f"step(fresh reset) {f:8.4f}s  reset/step = {r / m:6.1f}x"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=["CheetahRun", "CartpoleBalance"])
    p.add_argument("--num-envs", type=int, nargs="+", default=[512])
    p.add_argument("--T", type=int, default=16)
    p.add_argument("--variants", nargs="+", default=["raw", "naive", "direct", "pool"])
    p.add_argument("--chunks", type=int, nargs="*", default=[], help="extra pool variants: these chunk sizes")
    p.add_argument("--pool", type=int, default=None, help="reset_pool_size (default: the env's default)")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--runs-naive", type=int, default=3, help="rounds that include the (slow) naive variant")
    p.add_argument("--impl", default="jax")
    p.add_argument("--diagnose", action="store_true", help="also time reset / step pieces")
    args = p.parse_args()

    pool = args.pool or "default"
    print(f"backend={jax.default_backend()} devices={jax.devices()} impl={args.impl} pool={pool}")
    if args.diagnose:
        for env_id in args.envs:
            for n in args.num_envs:
                diagnose(env_id, n, args.impl, args.runs)
    variants = [(v, None) for v in args.variants] + [(f"pool/c{c}", c) for c in args.chunks]
    header = (
        f"{'env':<16} {'num_envs':>8} {'T':>4} {'variant':<8} {'compile+1st s':>13} {'median s':>9} "
        f"{'steps/s':>10} {'cpu s':>8}"
    )
    print(header)
    print("-" * len(header))
    for env_id in args.envs:
        for n in args.num_envs:
            setups = []
            for name, chunk in variants:
                strategy = {"raw": "pool", "naive": "naive", "direct": "direct"}.get(name, "pool")
                env = make_env(
                    env_id,
                    n,
                    impl=args.impl,
                    reset_strategy=strategy,
                    reset_pool_size=args.pool,
                    reset_chunk_size=chunk,
                )
                run = rollout_fn(env, args.T, name)
                state = jax.jit(env.reset)(jax.random.PRNGKey(0))
                (state, _), first, _ = _timed(run, state, jax.random.PRNGKey(1))
                setups.append(dict(name=name, run=run, state=state, first=first, wall=[], cpu=[]))
            for i in range(args.runs):
                for s in setups:
                    if s["name"] == "naive" and i >= args.runs_naive:
                        continue
                    (s["state"], _), wall, cpu = _timed(s["run"], s["state"], jax.random.PRNGKey(i + 2))
                    s["wall"].append(wall)
                    s["cpu"].append(cpu)
            for s in setups:
                med = statistics.median(s["wall"])
                print(
                    f"{env_id:<16} {n:>8} {args.T:>4} {s['name']:<8} {s['first']:>13.1f} {med:>9.4f} "
                    f"{n * args.T / med:>10.0f} {statistics.median(s['cpu']):>8.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
