"""REPPO on Gymnasium MuJoCo tasks at a fixed env-step budget, and the JAX Stable-Baselines (``sbx-rl``) SAC and
CrossQ on the same task and budget on the same machine: deterministic evaluation return and wall-clock.

    python benchmarks/gymnasium_mujoco.py reppo --task HalfCheetah-v5 --steps 1e6 --seeds 2 --json out.jsonl
    python benchmarks/gymnasium_mujoco.py sac --task HalfCheetah-v5 --steps 2e5 --json out.jsonl

REPPO runs the ``gymnasium`` settings below (host path, 32 envs x 64 steps, 32 minibatches x 8 epochs: 256
gradient steps per 2,048 env steps) with the task presets (gamma 0.99, reward scale 0.1, values [0, 150]);
``--seeds N`` trains its seeds ``--seed`` .. ``--seed`` + N - 1 in one program (``Config.num_seeds``).
sbx runs its defaults (``sbx.SAC("MlpPolicy", env)``, ``sbx.CrossQ("MlpPolicy", env)``: one env, one gradient step
per env step after 100 random steps). Every ``--eval-every`` env steps both are evaluated on whole episodes
of the deterministic policy (REPPO: ``eval_envs`` 8; sbx: SB3's ``evaluate_policy``); wall_s counts training
only. Results figures: docs/BENCHMARKS.md, "Gymnasium MuJoCo at 1M env steps".
"""

from __future__ import annotations

import argparse
import time

from _jsonl import append_jsonl

REPPO_GYMNASIUM = dict(
    num_envs=32, num_steps=64, num_minibatches=32, num_epochs=8, critic_width=256, actor_width=256,
    critic_lr=3e-4, dual_lr=3e-4, eval_envs=8,
)  # fmt: skip


def run_reppo(task: str, steps: int, eval_every: int, seed: int, seeds: int, run_dir: str | None) -> list[dict]:
    """Seeds seed .. seed + seeds - 1 trained in one program (``num_seeds``); one row per seed and evaluation."""
    from reppo import Config, train

    config = Config(env=f"gymnasium:{task}", total_steps=steps, eval_every=eval_every, seed=seed, num_seeds=seeds,
                    progress=False, **REPPO_GYMNASIUM)  # fmt: skip
    result = train(config, run_dir=run_dir)
    return [{"seed": seed + s, "env_steps": e["env_steps"], "wall_s": e["wall_s"] - e["eval_s"],
             "return": e["per_seed"][s]["eval/episode_return"]}
            for e in result.evaluations for s in range(seeds)]  # fmt: skip


def run_sbx(method: str, task: str, steps: int, eval_every: int, seed: int) -> list[dict]:
    import gymnasium
    import sbx
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy

    env, eval_env = gymnasium.make(task), gymnasium.make(task)
    model = getattr(sbx, {"sac": "SAC", "crossq": "CrossQ"}[method])("MlpPolicy", env, seed=seed, verbose=0)
    rows, clock = [], {"train": 0.0, "since": time.perf_counter()}

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every == 0:
                clock["train"] += time.perf_counter() - clock["since"]
                mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=8, deterministic=True)
                rows.append(
                    {"seed": seed, "env_steps": self.num_timesteps, "wall_s": clock["train"], "return": float(mean)}
                )
                print(rows[-1], flush=True)
                clock["since"] = time.perf_counter()
            return True

    model.learn(total_timesteps=steps, callback=Evaluate())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", choices=["reppo", "sac", "crossq"])
    parser.add_argument("--task", default="HalfCheetah-v5")
    parser.add_argument("--steps", type=float, default=1e6)
    parser.add_argument("--eval-every", type=float, default=1e5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--seeds", type=int, default=1, help="REPPO only: train seed .. seed + seeds - 1 in one program"
    )
    parser.add_argument("--run-dir", default=None, help="REPPO's run folder")
    parser.add_argument("--json", default=None, help="append the records to this JSON-lines file")
    a = parser.parse_args()
    steps, every = int(a.steps), int(a.eval_every)
    if a.method == "reppo":
        rows = run_reppo(a.task, steps, every, a.seed, a.seeds, a.run_dir)
    else:
        rows = run_sbx(a.method, a.task, steps, every, a.seed)
    append_jsonl(a.json, *({"method": a.method, "task": a.task, **row} for row in rows))
    print(f"{'seed':>6}{'env_steps':>10}{'wall_s':>10}{'return':>10}   ({a.method}, {a.task})")
    for row in rows:
        print(f"{row['seed']:>6}{row['env_steps']:>10}{row['wall_s']:>10.0f}{row['return']:>10.1f}")


if __name__ == "__main__":
    main()
