"""Discrete REPPO against rejax's PPO and PQN on gymnax MinAtar games, at equal env steps.

    PYTHONPATH=src python benchmarks/minatar.py --steps 2e6 --seeds 3 --json minatar.jsonl

Needs rejax (``pip install rejax``, written against 0.1.3) and gymnax >= 1.0. For each game and method the script
trains ``--seeds`` seeds for the same number of env steps and prints one row: the final return (mean +- population
std over seeds, and each seed's value) and the wall-clock seconds of the whole run, compilation and evaluation
included; both are also shown on their own (REPPO: ``TrainResult.compile_s``, which covers the evaluation program
too, and the time in its evaluations; rejax: compiling the training program, and compiling and running the final
evaluation).

What is measured. The budget ``--steps`` is rounded up to a multiple of every selected method's iteration size
(REPPO cpu preset 512 x 16 = 8192, PPO 64 x 128 = 8192, PQN 128 x 32 = 4096), so every method runs whole
iterations and the same number of env steps (the table prints the steps each one actually took). The final
return of a seed is the mean undiscounted return of ``--eval-episodes`` whole episodes of the final policy acting
greedily (capped at the game's ``max_steps_in_episode`` = 1000 steps):

- REPPO: ``reppo.train``'s final evaluation (``eval_envs`` = episodes per seed, the most probable action);
  ``eval_every`` gives a few evaluations per run, whose time counts in the wall-clock (the "eval" part).
- rejax: ``rejax.evaluate.evaluate`` (one episode per key, stopped at termination or the step cap) with a greedy
  ``act``: argmax of the PPO actor's logits, argmax of PQN's Q-values. rejax's own ``eval_callback`` is not used:
  it plays 128 episodes with PPO *sampling* from its Categorical policy and PQN epsilon-greedy with
  epsilon = 0.005. Training therefore runs with ``eval_freq`` = the whole budget, no initial evaluation and a
  no-op callback; the seeds are ``jax.vmap(Algo.train, in_axes=(None, 0))`` under one ``jax.jit``.

A second column gives the same final policies' return with stochastic actions, on as many episodes (not in the
timings): REPPO sampling from pi (``reppo eval``'s "stochastic", from the final checkpoint), PPO sampling from its
Categorical policy and PQN epsilon-greedy with epsilon = 0.005 (both rejax's own ``make_act``). On a deterministic
game (SpaceInvaders) every greedy episode is the same trajectory, so the sampled return measures the policy
rather than one episode.

rejax 0.1.3 unpacks the five values gymnax < 1.0 returned from ``env.step``; gymnax >= 1.0 (needed here) returns
six, terminated and truncated apart. rejax therefore gets the env in gymnax's own ``LegacyStepAPIWrapper`` (made
deep-copyable), whose ``done`` is terminated or truncated, as gymnax < 1.0 had it; rejax itself runs unmodified.

REPPO keeps its ``cpu`` preset (the Config defaults; MinAtar task preset gamma 0.99, values [0, 50]; the grids
read by the CNN of ``encoder="auto"``) unless ``--reppo FIELD=VALUE ...`` overrides Config fields (for example
``--reppo encoder=mlp num_envs=64 num_steps=128``; the budget is then rounded to REPPO's new iteration size) or
names another preset (``--reppo preset=minatar``, whose learning-rate decay is stretched to the budget unless
``lr_decay_steps`` is given too), and
trains seeds 1..S in one program; rejax trains with ``jax.random.PRNGKey(1..S)``. ``checkpoint_every=0`` (REPPO writes
only its final checkpoint, into a temporary folder) keeps disk writes out of its wall-clock.

Peer hyperparameters and their rejax fields:

PPO, gymnax-blines ``agents/Breakout-MinAtar/ppo.yaml`` (``SpaceInvaders-MinAtar/ppo.yaml`` is identical but for
the env name), https://github.com/RobertTLange/gymnax-blines/blob/15b76af31ce200b65db31a58d6c746612b8d7ba3/agents/Breakout-MinAtar/ppo.yaml

    gymnax-blines               rejax.PPO field
    num_train_envs 64           num_envs 64
    n_steps 128                 num_steps 128
    n_minibatch 8               num_minibatches 8
    epoch_ppo 4                 num_epochs 4
    lr_begin = lr_end 5e-4      learning_rate 5e-4 (constant; the warm-up goes from 5e-4 to 5e-4)
    gamma 0.999                 gamma 0.999
    gae_lambda 0.95             gae_lambda 0.95
    clip_eps 0.2                clip_eps 0.2 (rejax also clips the value loss with it, as gymnax-blines does)
    entropy_coeff 0.01          ent_coef 0.01
    critic_coeff 0.5            vf_coef 0.5
    max_grad_norm 0.5           max_grad_norm 0.5 (see below)
    Categorical-MLP 2 x 256     agent_kwargs hidden_layer_sizes (256, 256), activation relu (separate actor and
      flatten_3d                critic MLPs on the flattened 10 x 10 x C grid, as gymnax-blines' separate MLP)

Not mapped: gymnax-blines (``utils/models.py`` read at commit 120786091b0e6d8be345d604a9f50df1a139c8ca,
``utils/ppo.py`` at 0524590152e3f6addb95426a74c5d0fe78b92343) optimises actor and critic jointly with
``clip_by_global_norm(0.5)`` and ``scale_by_adam(eps=1e-5)`` and initialises biases uniform(0.05); rejax uses two
Adam optimisers (eps 1e-8) and ``optax.clip(max_grad_norm)``, an *element-wise* clip of each gradient entry to
[-0.5, 0.5], not a global-norm clip, and flax's default initialisers.

PQN, purejaxql ``purejaxql/config/alg/pqn_minatar.yaml``,
https://github.com/mttga/purejaxql/blob/970ecce0d427bb43d5b5cb8cccad26ec5231b224/purejaxql/config/alg/pqn_minatar.yaml

    purejaxql                   rejax.PQN field
    NUM_ENVS 128                num_envs 128
    NUM_STEPS 32                num_steps 32
    EPS_START 1, EPS_FINISH     eps_start 1.0, eps_end 0.05, exploration_fraction 0.1 (linear over the first 10%
      0.05, EPS_DECAY 0.1         of this run's env steps)
    NUM_MINIBATCHES 32          num_minibatches 32
    NUM_EPOCHS 2                num_epochs 2
    LR 5e-4                     learning_rate 5e-4, constant: rejax has no learning-rate schedule
    LR_LINEAR_DECAY True        (not mapped)
    MAX_GRAD_NORM 10            max_grad_norm 10 (element-wise clip in rejax, see above)
    GAMMA 0.99                  gamma 0.99
    LAMBDA 0.65                 td_lambda 0.65
    NORM_TYPE layer_norm        rejax PQN's fixed network: MLP (64, 64), each Dense followed by LayerNorm and relu

Not mapped: purejaxql's ``pqn_minatar.py`` (read at commit 0436c80a95e685ccc30c06a4473f9071a42d12aa) uses a CNN
(Conv 16 3x3 + LayerNorm, Dense 128 + LayerNorm), RAdam with ``clip_by_global_norm``, and decays the learning rate
to 0 and epsilon over TOTAL_TIMESTEPS_DECAY = 1e7 steps whatever the run's length; rejax's PQN hard-codes its
hidden sizes (passing ``hidden_layer_sizes`` in ``agent_kwargs`` is a TypeError), uses Adam and a constant
learning rate, and decays epsilon over ``exploration_fraction`` of ``total_timesteps``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import rejax
import yaml
from _jsonl import append_jsonl  # sibling module of these scripts
from gymnax.wrappers import LegacyStepAPIWrapper
from rejax.evaluate import evaluate

from reppo import train
from reppo.config import Config, preset_config
from reppo.evaluate import evaluate_policy
from reppo.policy import load as load_policy

EVALS_PER_RUN = 4
"""REPPO evaluations per run (the last one, at the end, gives the final return)."""

PPO_HYPERPARAMETERS = {
    "num_envs": 64,
    "num_steps": 128,
    "num_minibatches": 8,
    "num_epochs": 4,
    "learning_rate": 5e-4,
    "gamma": 0.999,
    "gae_lambda": 0.95,
    "clip_eps": 0.2,
    "ent_coef": 0.01,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
    "agent_kwargs": {"hidden_layer_sizes": (256, 256), "activation": "relu"},
}

PQN_HYPERPARAMETERS = {
    "num_envs": 128,
    "num_steps": 32,
    "eps_start": 1.0,
    "eps_end": 0.05,
    "exploration_fraction": 0.1,
    "num_minibatches": 32,
    "num_epochs": 2,
    "learning_rate": 5e-4,
    "max_grad_norm": 10.0,
    "gamma": 0.99,
    "td_lambda": 0.65,
}


@dataclasses.dataclass
class RunResult:
    returns: list[float]
    """Final greedy return of each seed (mean over the evaluation episodes)."""
    sampled: list[float]
    """Final return of each seed with actions sampled from its policy (REPPO, PPO) or epsilon-greedy with
    epsilon = 0.005 (PQN, rejax's evaluation rule), mean over as many episodes."""
    env_steps: int
    wall_s: float
    """Whole run: compilation, training and evaluation."""
    compile_s: float
    eval_s: float
    hyperparameters: dict


def ppo_greedy_act(algo: rejax.PPO, ts) -> Callable:
    """``act(obs, rng)``: the most probable action of the PPO actor (its logits' argmax)."""

    def act(obs, rng):
        logits = algo.actor.apply(ts.actor_ts.params, obs[None], method=lambda m, x: m.action_logits(m.features(x)))
        return jnp.argmax(logits[0])

    return act


def pqn_greedy_act(algo: rejax.PQN, ts) -> Callable:
    """``act(obs, rng)``: the action of the largest Q-value (epsilon = 0)."""

    def act(obs, rng):
        return jnp.argmax(algo.agent.apply(ts.q_ts.params, obs[None])[0])

    return act


REJAX = {
    "ppo": (rejax.PPO, PPO_HYPERPARAMETERS, ppo_greedy_act),
    "pqn": (rejax.PQN, PQN_HYPERPARAMETERS, pqn_greedy_act),
}


def reppo_config(reppo: dict | None = None, **fields) -> Config:
    """REPPO's Config: the preset named by ``reppo["preset"]`` (default cpu) with the other overrides and
    ``fields`` on top."""
    overrides = {**(reppo or {}), **fields}
    return preset_config(overrides.pop("preset", "cpu"), **overrides)


def iteration_size(method: str, reppo: dict | None = None) -> int:
    if method == "reppo":
        return reppo_config(reppo).batch_size
    hyperparameters = REJAX[method][1]
    return hyperparameters["num_envs"] * hyperparameters["num_steps"]


def common_budget(steps: float, methods: list[str], reppo: dict | None = None) -> int:
    """``steps`` rounded up to whole iterations of every method in ``methods`` (REPPO with the ``reppo``
    overrides of its Config)."""
    unit = math.lcm(*(iteration_size(m, reppo) for m in methods))
    return math.ceil(steps / unit) * unit


def run_reppo(game: str, steps: int, seeds: int, episodes: int, overrides: dict | None = None) -> RunResult:
    with tempfile.TemporaryDirectory() as run_dir:
        config = reppo_config(overrides, env=f"gymnax:{game}", total_steps=steps, num_seeds=seeds,
                              eval_every=math.ceil(steps / EVALS_PER_RUN), eval_envs=episodes, progress=False,
                              run_dir=run_dir, checkpoint_every=0)  # fmt: skip
        if config.lr_decay_steps and "lr_decay_steps" not in (overrides or {}):
            config = dataclasses.replace(config, lr_decay_steps=steps)  # a preset's decay spans this budget
        start = time.perf_counter()
        result = train(config, echo=lambda *a: None)
        wall_s = time.perf_counter() - start
        sampled = [reppo_sampled_return(run_dir, seed_index, episodes) for seed_index in range(seeds)]
    final = result.evaluations[-1]
    hyperparameters = {k: v for k, v in dataclasses.asdict(result.config).items() if k != "run_dir"}
    return RunResult(returns=[row["eval/episode_return"] for row in final["per_seed"]], sampled=sampled,
                     env_steps=final["env_steps"], wall_s=wall_s, compile_s=result.compile_s, eval_s=final["eval_s"],
                     hyperparameters=hyperparameters)  # fmt: skip


def reppo_sampled_return(run_dir: str, seed_index: int, episodes: int) -> float:
    """Mean return of ``episodes`` episodes of one seed's final policy with actions sampled from pi (reppo's
    ``evaluate_policy``, as ``reppo eval`` runs it), from the run's final checkpoint."""
    policy = load_policy(run_dir, seed_index=seed_index)
    out = evaluate_policy(policy, episodes, jax.random.PRNGKey(seed_index + 1), deterministic=False)
    return float(np.mean(out.returns))


def no_evaluation(algo, ts, rng) -> tuple:
    """rejax's ``eval_callback`` during training: nothing (the final policy is evaluated after training)."""
    return ()


def policy_returns(algo, make_act: Callable, ts, keys: jax.Array, episodes: int) -> np.ndarray:
    """(seeds, episodes) returns of each seed's ``make_act(algo, ts)`` policy in ``ts`` (a leading seed axis), by
    ``rejax.evaluate.evaluate``: one episode per key, until termination or ``max_steps_in_episode``."""
    max_steps = int(algo.env_params.max_steps_in_episode)

    def one_seed(ts, key):
        _, returns = evaluate(make_act(algo, ts), key, algo.env, algo.env_params, episodes, max_steps)
        return returns

    return np.asarray(jax.jit(jax.vmap(one_seed))(ts, keys))


class FiveValueStep(LegacyStepAPIWrapper):
    """gymnax's adapter to the five-value ``step`` of gymnax < 1.0, which rejax unpacks (see the module doc), made
    deep-copyable: rejax deep-copies its config, and the adapter's ``__getattr__`` recurses on a copy."""

    def __deepcopy__(self, memo) -> FiveValueStep:
        return self  # an env object holds no state


def run_rejax(method: str, game: str, steps: int, seeds: int, episodes: int) -> RunResult:
    algo_class, hyperparameters, greedy_act = REJAX[method]
    schedule = {"total_timesteps": steps, "eval_freq": steps, "skip_initial_evaluation": True}
    env, env_params = gymnax.make(game)
    algo = algo_class.create(env=FiveValueStep(env), env_params=env_params, **hyperparameters, **schedule)
    algo = algo.replace(eval_callback=no_evaluation)
    keys = jnp.stack([jax.random.PRNGKey(seed) for seed in range(1, seeds + 1)])
    start = time.perf_counter()
    train_fn = jax.jit(jax.vmap(algo_class.train, in_axes=(None, 0))).lower(algo, keys).compile()
    compiled = time.perf_counter()
    ts, _ = jax.block_until_ready(train_fn(algo, keys))
    trained = time.perf_counter()
    eval_keys = jax.vmap(lambda key: jax.random.fold_in(key, 1))(keys)
    returns = policy_returns(algo, greedy_act, ts, eval_keys, episodes)
    end = time.perf_counter()
    # rejax's own acting rule (PPO samples, PQN is epsilon-greedy with 0.005); not in the timings
    sampled = policy_returns(algo, algo_class.make_act, ts, eval_keys, episodes)
    return RunResult(returns=returns.mean(axis=1).tolist(), sampled=sampled.mean(axis=1).tolist(),
                     env_steps=int(ts.global_step[0]), wall_s=end - start,
                     compile_s=compiled - start, eval_s=end - trained,
                     hyperparameters={**hyperparameters, **schedule})  # fmt: skip


def run(method: str, game: str, steps: int, seeds: int, episodes: int, reppo: dict | None = None) -> RunResult:
    if method == "reppo":
        return run_reppo(game, steps, seeds, episodes, reppo)
    return run_rejax(method, game, steps, seeds, episodes)


def over_seeds_cell(values: list[float]) -> str:
    """``mean ± std (each seed's value)``."""
    per_seed = ", ".join(f"{x:.1f}" for x in values)
    return f"{np.mean(values):.1f} ± {np.std(values):.1f} ({per_seed})"


def table_row(game: str, method: str, r: RunResult) -> str:
    wall = f"{r.wall_s:.0f} (compile {r.compile_s:.0f}, eval {r.eval_s:.0f})"
    greedy, sampled = over_seeds_cell(r.returns), over_seeds_cell(r.sampled)
    return f"| {game} | {method} | {r.env_steps:,} | {greedy} | {sampled} | {wall} |"


def json_record(game: str, method: str, r: RunResult, episodes: int) -> dict:
    return {"game": game, "method": method, "env_steps": r.env_steps, "returns": r.returns,
            "mean": float(np.mean(r.returns)), "std": float(np.std(r.returns)), "sampled": r.sampled,
            "wall_s": r.wall_s, "compile_s": r.compile_s, "eval_s": r.eval_s, "eval_episodes": episodes,
            "hyperparameters": r.hyperparameters}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", nargs="+", default=["Breakout-MinAtar", "SpaceInvaders-MinAtar"])
    parser.add_argument("--steps", type=float, default=2e6, help="env steps per run (rounded up to whole iterations)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", nargs="+", choices=["reppo", "ppo", "pqn"], default=["reppo", "ppo", "pqn"])
    parser.add_argument("--json", default=None, help="append one JSON line per (game, method) to this file")
    parser.add_argument("--eval-episodes", type=int, default=128, help="episodes per seed, for each of the two columns")
    parser.add_argument(
        "--reppo",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="REPPO Config overrides, e.g. encoder=mlp num_envs=64 num_steps=128 (values read as YAML)",
    )
    args = parser.parse_args(argv)
    args.reppo = dict(reppo_override(item) for item in args.reppo)
    return args


def reppo_override(item: str) -> tuple[str, object]:
    """``FIELD=VALUE`` -> (field, the value read as YAML); a field Config does not have is a one-line error."""
    field, sep, value = item.partition("=")
    names = {f.name for f in dataclasses.fields(Config)}
    if not sep or field not in names:
        raise SystemExit(f"--reppo {item!r}: expected FIELD=VALUE with FIELD one of Config's fields")
    return field, yaml.safe_load(value)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    steps = common_budget(args.steps, args.methods, args.reppo)
    machine = platform.processor() or platform.machine()
    print(f"MinAtar, {steps:,} env steps, {args.seeds} seeds, {args.eval_episodes} eval episodes per seed and column; "
          f"{machine}, {os.cpu_count()} CPUs, jax {jax.__version__} on {jax.default_backend()}\n")  # fmt: skip
    print("| game | method | env steps | final greedy return mean ± std (per seed) | sampled actions | wall-clock s |")
    print("|---|---|---|---|---|---|")
    for game in args.games:
        for method in args.methods:
            result = run(method, game, steps, args.seeds, args.eval_episodes, args.reppo)
            print(table_row(game, method, result), flush=True)
            append_jsonl(args.json, json_record(game, method, result, args.eval_episodes))


if __name__ == "__main__":
    main()
