"""Env steps/s of each env family through reppo's adapters, random actions, no learning.

    python benchmarks/family_throughput.py --envs 32 --steps 200 --json out.jsonl
    python benchmarks/family_throughput.py --ids gymnasium:HalfCheetah-v5 envpool:HalfCheetah-v5

Host families (Gymnasium, EnvPool, ManiSkill) are stepped from Python as the host rollout does (numpy actions in,
StepResult out); JAX families (Playground, Brax, gymnax) run ``--steps`` steps in one jitted ``lax.scan``, timed
after compilation. The rate is envs x steps / seconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _jsonl import append_jsonl

IDS = ("gymnasium:HalfCheetah-v5", "envpool:HalfCheetah-v5", "envpool:T1JoystickFlatTerrain-v1",
       "gymnax:Pendulum-v1", "brax:halfcheetah", "CheetahRun")  # fmt: skip


def host_rate(env, steps: int) -> float:
    import jax

    env.reset(jax.random.PRNGKey(0))
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, env.num_envs, env.action_size))
    t = time.perf_counter()
    for a in actions:
        env.step(a)
    return env.num_envs * steps / (time.perf_counter() - t)


def jax_rate(env, steps: int) -> tuple[float, float]:
    import jax

    def run(state, key):
        def body(s, k):
            s, _ = env.step(s, jax.random.uniform(k, (env.num_envs, env.action_size), minval=-1, maxval=1))
            return s, None

        return jax.lax.scan(body, state, jax.random.split(key, steps))[0]

    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    t = time.perf_counter()
    compiled = jax.jit(run).lower(state, jax.random.PRNGKey(1)).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(compiled(state, jax.random.PRNGKey(1)))
    t = time.perf_counter()
    jax.block_until_ready(compiled(state, jax.random.PRNGKey(2)))
    return env.num_envs * steps / (time.perf_counter() - t), compile_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", nargs="*", default=list(IDS))
    parser.add_argument("--envs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--json", default=None)
    a = parser.parse_args()
    from reppo.envs import HostVecEnv, make_env

    print(f"{'env':<36}{'path':>6}{'envs':>6}{'steps/s':>10}{'compile s':>11}")
    for env_id in a.ids:
        env = make_env(env_id, a.envs)
        host = isinstance(env, HostVecEnv)
        rate, compile_s = (host_rate(env, a.steps), 0.0) if host else jax_rate(env, a.steps)
        print(f"{env_id:<36}{'host' if host else 'fused':>6}{a.envs:>6}{rate:>10,.0f}{compile_s:>11.0f}", flush=True)
        append_jsonl(a.json, {"env": env_id, "host": host, "envs": a.envs, "steps_per_s": rate, "compile_s": compile_s})
        getattr(env, "close", lambda: None)()


if __name__ == "__main__":
    main()
