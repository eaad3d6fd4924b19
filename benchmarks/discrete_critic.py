"""Per-action HL-Gauss head against a one-hot action input, for the discrete critic (docs/discrete.md).

    PYTHONPATH=src python benchmarks/discrete_critic.py [--actions 6 --batch 4096 --width 512]

Times, jitted on this machine's default device (median of ``--repeats`` calls after one warm-up), the forward +
backward pass of the two things a discrete REPPO minibatch step asks of the critic:

  all-Q   Q(x, a) for every action a (the exact sums of the soft value and the actor objective), differentiated
          in the critic's parameters (an upper bound of the actor step, which differentiates only in the actor);
  Q fwd   the same values, forward only (what the targets and the actor step ask: the actor's gradient does not
          enter the critic);
  CE      the HL-Gauss cross-entropy of the taken action's logits (the critic step).

The per-action head (``reppo.nets.DiscreteCritic``) gets all-Q from one pass over B rows; the one-hot design
(``reppo.nets.Critic`` with a one-hot action) needs B x A rows.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from reppo.algo.hl_gauss import HLGauss
from reppo.nets import Critic, DiscreteCritic


def timed(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--actions", type=int, default=6)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--obs", type=int, default=400, help="MinAtar: 10 x 10 x 4 channels, flattened")
    p.add_argument("--bins", type=int, default=151)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    A, B = args.actions, args.batch
    hl = HLGauss.create(-10.0, 10.0, args.bins)
    zero = tuple(hl.to_probs(jnp.zeros(())).tolist())
    key = jax.random.key(0)
    obs = jax.random.normal(key, (B, args.obs))
    actions = jax.random.randint(jax.random.fold_in(key, 1), (B,), 0, A)
    returns = jax.random.uniform(jax.random.fold_in(key, 2), (B,), minval=-5.0, maxval=5.0)
    weights = jax.nn.softmax(jax.random.normal(jax.random.fold_in(key, 3), (B, A)))  # stands in for pi(a|x)

    head = DiscreteCritic(A, args.width, 2, zero)
    onehot = Critic(args.width, 2, zero)
    head_params = head.init(key, obs[:1], actions[:1])
    onehot_params = onehot.init(key, obs[:1], jnp.zeros((1, A)))
    eye = jnp.eye(A)

    def head_all_q(params):
        q = hl.to_value(head.apply(params, obs, method="q_logits"))  # (B, A)
        return jnp.mean(jnp.sum(weights * q, -1))

    def onehot_all_q(params):
        x = jnp.broadcast_to(obs, (A, *obs.shape))
        a = jnp.broadcast_to(eye[:, None, :], (A, B, A))
        q = hl.to_value(onehot.apply(params, x, a, method="q_logits"))  # (A, B)
        return jnp.mean(jnp.sum(weights.T * q, 0))

    def ce(logits):
        return -jnp.mean(jnp.sum(hl.to_probs(returns) * jax.nn.log_softmax(logits, -1), -1))

    def head_ce(params):
        logits = head.apply(params, obs, method="q_logits")
        return ce(jnp.take_along_axis(logits, actions[:, None, None], axis=1)[:, 0])

    def onehot_ce(params):
        return ce(onehot.apply(params, obs, jax.nn.one_hot(actions, A), method="q_logits"))

    print(f"device {jax.devices()[0].platform}, A={A}, B={B}, width={args.width}, obs={args.obs}, bins={args.bins}")
    print(f"{'design':<18}{'all-Q fwd+bwd ms':>18}{'all-Q fwd ms':>14}{'CE fwd+bwd ms':>16}")
    for name, all_q, ce_fn, params in (
        ("per-action head", head_all_q, head_ce, head_params),
        ("one-hot input", onehot_all_q, onehot_ce, onehot_params),
    ):
        t_q = timed(jax.jit(jax.grad(all_q)), params, repeats=args.repeats)
        t_fwd = timed(jax.jit(all_q), params, repeats=args.repeats)
        t_ce = timed(jax.jit(jax.grad(ce_fn)), params, repeats=args.repeats)
        print(f"{name:<18}{1e3 * t_q:>18.1f}{1e3 * t_fwd:>14.1f}{1e3 * t_ce:>16.1f}")


if __name__ == "__main__":
    main()
