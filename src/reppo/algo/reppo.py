"""REPPO training iteration: ``make_train(config, env) -> (init, iteration)``, pure and jittable (spec section 1).

One iteration: freeze pi_old, roll out N envs for T steps, compute soft TD(lambda) targets once, then E epochs of
M minibatches (critic step, actor step against the just-updated critic, dual step), then update the observation
statistics. Everything runs inside ``lax.scan``; no PRNG key is used twice.

NaN/Inf guard (``config.max_bad_iterations > 0``; not part of the spec): after steps 2-5 of spec section 1 the
iteration checks, inside the program, that the rollout's observations and rewards, the losses and gradient norms, and
the new dual variables and statistics (section 6) are all finite (finite gradients keep the networks and their Adam
moments finite, see ``guard``). If not, the learner state is rolled
back to the one before the iteration, so the statistics never see a non-finite observation (only the PRNG
key and the iteration counter advance, so the next iteration collects a fresh rollout instead of repeating this
one), the envs that produced a non-finite observation or reward are reset, and ``health/*`` metrics report it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from reppo.algo import distributions, losses
from reppo.algo.hl_gauss import HLGauss
from reppo.algo.targets import soft_td_lambda
from reppo.config import Config
from reppo.envs.base import EnvState, VecEnv
from reppo.nets import Actor, Critic
from reppo.normalization import RunningStats
from reppo.parallel import ENV_AXIS

# Actions sent to the environment are clipped to [-1 + eps, 1 - eps] (spec section 2).
ACTION_EPS = 1e-5

# Metrics of the NaN/Inf guard (0/1 per iteration and seed, except bad_envs: the number of envs reset).
HEALTH_METRICS = (
    "health/rolled_back",
    "health/bad_envs",
    "health/nonfinite_obs",
    "health/nonfinite_reward",
    "health/nonfinite_loss",
    "health/nonfinite_params",
)


def _all_finite(tree) -> jax.Array:
    """() bool: every element of every floating-point leaf of ``tree`` is finite. One reduction over the
    concatenated leaves: a reduction per leaf (hundreds of tiny kernels for parameters and Adam moments) costs
    ~5 % of a cpu-preset iteration in wall-clock, the concatenation ~0."""
    leaves = [jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.isfinite(jnp.concatenate(leaves))) if leaves else jnp.ones((), bool)


def _select(ok: jax.Array, new, old):
    """``new`` if ``ok`` else ``old`` (same structure). The float32 leaves are selected as one concatenated vector:
    a select per leaf (and the copy per leaf that keeps ``old`` alive across the in-place update) is hundreds of tiny
    kernels, several times the cost of the data they move."""
    leaves, treedef = jax.tree.flatten(new)
    olds = jax.tree.leaves(old)
    flat = [x.dtype == jnp.float32 for x in leaves]
    pick = jnp.where(
        ok,
        jnp.concatenate([x.ravel() for x, f in zip(leaves, flat, strict=True) if f]),
        jnp.concatenate([x.ravel() for x, f in zip(olds, flat, strict=True) if f]),
    )
    out, offset = [], 0
    for x, y, f in zip(leaves, olds, flat, strict=True):
        if f:
            out.append(jax.lax.slice_in_dim(pick, offset, offset + x.size).reshape(x.shape))
            offset += x.size
        else:
            out.append(jnp.where(ok, x, y))
    return jax.tree.unflatten(treedef, out)


def _finite_per_env(x: jax.Array) -> jax.Array:
    """(N,) bool for x of shape (T, N, ...): env n's entries are finite at every step."""
    return jnp.all(jnp.isfinite(x).reshape(x.shape[0], x.shape[1], -1), axis=(0, 2))


@struct.dataclass
class TrainState:
    """Everything a REPPO run carries from one iteration to the next."""

    actor_params: dict
    critic_params: dict
    log_duals: jax.Array
    """(log alpha, log beta)."""
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    dual_opt: optax.OptState
    obs_stats: RunningStats
    critic_obs_stats: RunningStats
    env_state: EnvState
    key: jax.Array
    iteration: jax.Array


@struct.dataclass
class Transition:
    """One rollout step for all envs (time-major after the scan); observations raw (unnormalised)."""

    obs: jax.Array
    critic_obs: jax.Array
    actions: jax.Array
    log_probs: jax.Array
    rewards: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    next_obs: jax.Array
    next_critic_obs: jax.Array


class REPPO(struct.PyTreeNode):
    """Static pieces of a run (networks, optimisers, bin layout) built from a Config; methods are pure."""

    config: Config = struct.field(pytree_node=False)
    env: VecEnv = struct.field(pytree_node=False)
    actor: Actor = struct.field(pytree_node=False)
    critic: Critic = struct.field(pytree_node=False)
    actor_tx: optax.GradientTransformation = struct.field(pytree_node=False)
    critic_tx: optax.GradientTransformation = struct.field(pytree_node=False)
    dual_tx: optax.GradientTransformation = struct.field(pytree_node=False)
    hl: HLGauss = struct.field(pytree_node=False)
    mesh: Mesh | None = struct.field(pytree_node=False, default=None)
    """Devices the envs and the batch are split over (``reppo.parallel``); None: no sharding constraints."""

    def shard_rows(self, x: jax.Array, axis: int = 0) -> jax.Array:
        """Split ``x``'s axis ``axis`` (envs or batch rows) over the mesh; a no-op on one device."""
        if self.mesh is None or self.mesh.size == 1:
            return x
        spec = PartitionSpec(*([None] * axis), ENV_AXIS)
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

    # ---- acting -------------------------------------------------------------------------------------------
    def policy_dist(self, actor_params, obs_stats: RunningStats, raw_obs: jax.Array):
        return self.actor.apply(actor_params, obs_stats.normalize(raw_obs))

    def critic_q(self, critic_params, critic_obs: jax.Array, actions: jax.Array) -> jax.Array:
        logits = self.critic.apply(critic_params, critic_obs, actions, method="q_logits")
        return self.hl.to_value(logits)

    # ---- init ---------------------------------------------------------------------------------------------
    def init(self, key: jax.Array) -> TrainState:
        """The state of one seed: fresh networks, optimisers and duals; statistics from the first observations."""
        k_actor, k_critic, k_env, key = jax.random.split(key, 4)
        env_state = self.env.reset(k_env)
        learner = self.init_learner(k_actor, k_critic, key, env_state.obs, env_state.critic_obs)
        return learner.replace(env_state=env_state)

    def init_learner(self, k_actor, k_critic, key, obs: jax.Array, critic_obs: jax.Array) -> TrainState:
        """Everything but the env state (``env_state=None``), given the envs' first observations."""
        c, env = self.config, self.env
        actor_params = self.actor.init(k_actor, jnp.zeros((1, env.obs_size)))
        critic_params = self.critic.init(k_critic, jnp.zeros((1, env.critic_obs_size)), jnp.zeros((1, env.action_size)))
        log_duals = jnp.log(jnp.array([c.init_alpha, c.init_beta], jnp.float32))
        return TrainState(
            actor_params=actor_params,
            critic_params=critic_params,
            log_duals=log_duals,
            actor_opt=self.actor_tx.init(actor_params),
            critic_opt=self.critic_tx.init(critic_params),
            dual_opt=self.dual_tx.init(log_duals),
            # Start the statistics from the first observations so the first rollout is already normalised.
            obs_stats=RunningStats.create(env.obs_size).update(obs),
            critic_obs_stats=RunningStats.create(env.critic_obs_size).update(critic_obs),
            env_state=None,
            key=key,
            iteration=jnp.zeros((), jnp.int32),
        )

    # ---- rollout ------------------------------------------------------------------------------------------
    def act(self, actor_params, obs_stats: RunningStats, obs: jax.Array, key: jax.Array):
        """a ~ pi_theta(.|x) for raw observations, clipped for the env; returns (action, log pi(a|x))."""
        mean, std = self.policy_dist(actor_params, obs_stats, obs)
        action, _, log_prob = distributions.sample(key, mean, std)
        return jnp.clip(action, -1.0 + ACTION_EPS, 1.0 - ACTION_EPS), log_prob

    def rollout(self, state: TrainState, key: jax.Array) -> tuple[EnvState, Transition]:
        """T steps of all envs with a ~ pi_theta; normalisation statistics frozen."""
        k_pool, k_steps = jax.random.split(key)
        act = lambda obs, step_key: self.act(state.actor_params, state.obs_stats, obs, step_key)
        return self.collect(state.env_state, k_pool, act, jax.random.split(k_steps, self.config.num_steps))

    def collect(self, env_state: EnvState, pool_key: jax.Array, act: Callable, step_keys: jax.Array):
        """Scan ``act(obs, step_key) -> (action, log_prob)`` over ``step_keys`` (one per step) through the env."""
        env_state = self.env.prepare_rollout(env_state, pool_key)

        def step(env_state: EnvState, step_key: jax.Array):
            action, log_prob = act(env_state.obs, step_key)
            next_state, result = self.env.step(env_state, action)
            transition = Transition(
                obs=env_state.obs,
                critic_obs=env_state.critic_obs,
                actions=action,
                log_probs=log_prob,
                rewards=result.reward,
                terminated=result.terminated,
                truncated=result.truncated,
                next_obs=result.next_obs,
                next_critic_obs=result.next_critic_obs,
            )
            return next_state, jax.tree.map(self.shard_rows, transition)  # each device keeps its envs' steps

        return jax.lax.scan(step, env_state, step_keys)

    # ---- targets ------------------------------------------------------------------------------------------
    def soft_values(self, state: TrainState, next_obs: jax.Array, next_critic_obs: jax.Array, key: jax.Array):
        """V(x) = (1/K) sum_k [Q(x, a_k) - alpha log pi(a_k|x)], a_k ~ pi_theta (spec section 3), evaluated in
        chunks of at most ``value_chunk_size`` (state, sample) rows, so memory stays bounded for any K.

        Inputs are flat and normalised, (B, ...). Also returns phi(x, a_1) for the first sample, the auxiliary
        loss's next-embedding target, so that it is not recomputed in every epoch."""
        c = self.config
        k_samples = c.num_value_samples
        alpha = jnp.exp(state.log_duals[0])
        size = next_obs.shape[0]
        chunk = max(1, min(size, c.value_chunk_size // k_samples))
        num_chunks = -(-size // chunk)
        pad = num_chunks * chunk - size

        def chunked(x):
            x = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
            return x.reshape(num_chunks, chunk, *x.shape[1:])

        def value_chunk(args):
            obs, critic_obs, chunk_key = args
            mean, std = self.actor.apply(state.actor_params, obs)
            u = mean + std * jax.random.normal(chunk_key, (k_samples, *mean.shape))
            log_probs = distributions.log_prob_from_pre_tanh(u, mean, std)
            actions = jnp.clip(jnp.tanh(u), -1.0 + ACTION_EPS, 1.0 - ACTION_EPS)
            critic_in = jnp.broadcast_to(critic_obs, (k_samples, *critic_obs.shape))
            emb = self.critic.apply(state.critic_params, critic_in, actions, method="embed")
            q = self.hl.to_value(self.critic.apply(state.critic_params, emb, method="logits"))
            return jnp.mean(q - alpha * log_probs, axis=0), emb[0]

        keys = jax.random.split(key, num_chunks)
        values, embeddings = jax.lax.map(value_chunk, (chunked(next_obs), chunked(next_critic_obs), keys))
        return values.reshape(-1)[:size], embeddings.reshape(-1, embeddings.shape[-1])[:size]

    # ---- update -------------------------------------------------------------------------------------------
    def update_minibatch(self, state: TrainState, mb: losses.Minibatch, key: jax.Array):
        c = self.config
        # 1. critic step
        (_, critic_info), grads = jax.value_and_grad(losses.critic_loss, has_aux=True)(
            state.critic_params, self.critic.apply, mb, self.hl, c.aux_coef
        )
        updates, critic_opt = self.critic_tx.update(grads, state.critic_opt, state.critic_params)
        critic_params = optax.apply_updates(state.critic_params, updates)
        critic_info["critic_grad_norm"] = optax.tree.norm(grads)

        # 2. actor step against the just-updated critic (its parameters closed over, so they get no gradient)
        alpha, beta = jnp.exp(state.log_duals[0]), jnp.exp(state.log_duals[1])
        critic_q = lambda x, a: self.critic_q(critic_params, x, a)
        (_, (stats, actor_info)), grads = jax.value_and_grad(losses.actor_loss, has_aux=True)(
            state.actor_params,
            self.actor.apply,
            mb.old_mean,
            mb.old_std,
            critic_q,
            mb.obs,
            mb.critic_obs,
            key,
            alpha,
            beta,
            c.kl_bound,
            c.num_kl_samples,
        )
        updates, actor_opt = self.actor_tx.update(grads, state.actor_opt, state.actor_params)
        actor_params = optax.apply_updates(state.actor_params, updates)
        actor_info["actor_grad_norm"] = optax.tree.norm(grads)

        # 3. dual step on (log alpha, log beta)
        target_entropy = -c.entropy_coef * self.env.action_size
        dual_grads = jax.grad(losses.dual_loss)(state.log_duals, stats, target_entropy, c.kl_bound)
        updates, dual_opt = self.dual_tx.update(dual_grads, state.dual_opt, state.log_duals)
        log_duals = optax.apply_updates(state.log_duals, updates)

        new_state = state.replace(
            actor_params=actor_params,
            critic_params=critic_params,
            log_duals=log_duals,
            actor_opt=actor_opt,
            critic_opt=critic_opt,
            dual_opt=dual_opt,
        )
        return new_state, {**critic_info, **actor_info}

    # ---- one iteration ------------------------------------------------------------------------------------
    def compute_targets(self, state: TrainState, traj: Transition, key: jax.Array) -> losses.Minibatch:
        """Soft TD(lambda) targets for the whole rollout (once per iteration) and the flat, normalised batch."""
        c = self.config
        flat = lambda x: x.reshape(c.batch_size, *x.shape[2:])
        norm_obs = state.obs_stats.normalize
        norm_critic = state.critic_obs_stats.normalize
        next_critic_obs = flat(norm_critic(traj.next_critic_obs))
        next_values, next_embedding = self.soft_values(state, flat(norm_obs(traj.next_obs)), next_critic_obs, key)
        alpha = jnp.exp(state.log_duals[0])
        # log pi(a_{t+1} | x_{t+1}): pi_theta = pi_old here, so the rollout's own log-probs are exact.
        next_log_probs = jnp.concatenate([traj.log_probs[1:], traj.log_probs[-1:]], axis=0)
        returns = soft_td_lambda(
            traj.rewards,
            traj.terminated,
            traj.truncated,
            next_values.reshape(c.num_steps, c.num_envs),
            next_log_probs,
            alpha,
            c.gamma,
            c.lam,
        )
        obs = flat(norm_obs(traj.obs))
        old_mean, old_std = self.actor.apply(state.actor_params, obs)  # pi_old = pi_theta at this point
        batch = losses.Minibatch(
            obs=obs,
            critic_obs=flat(norm_critic(traj.critic_obs)),
            actions=flat(traj.actions),
            rewards=flat(traj.rewards),
            terminated=flat(traj.terminated),
            returns=flat(returns),
            next_embedding=next_embedding,
            old_mean=old_mean,
            old_std=old_std,
        )
        return jax.tree.map(self.shard_rows, batch)

    def update(self, state: TrainState, data: losses.Minibatch, key: jax.Array):
        """E epochs of M shuffled minibatches (pi_old, the actor before the update, is in ``data``)."""
        c = self.config

        def epoch(state: TrainState, epoch_key: jax.Array):
            k_perm, k_mb = jax.random.split(epoch_key)
            perm = jax.random.permutation(k_perm, c.batch_size).reshape(c.num_minibatches, c.minibatch_size)

            def minibatch(state, args):
                # Gathered here, one minibatch at a time: a shuffled copy of the whole batch (the (B, width)
                # auxiliary targets above all) would be live for the whole epoch. Global minibatches, each split
                # by rows over the devices (gradients are then all-reduced).
                rows, mb_key = args
                mb = jax.tree.map(lambda x: self.shard_rows(x[rows]), data)
                return self.update_minibatch(state, mb, mb_key)

            return jax.lax.scan(minibatch, state, (perm, jax.random.split(k_mb, c.num_minibatches)))

        state, infos = jax.lax.scan(epoch, state, jax.random.split(key, c.num_epochs))
        return state, jax.tree.map(jnp.mean, infos)

    def iteration(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        """Rollout, targets, update, then the observation statistics (spec section 1); with the guard on, a
        non-finite iteration is rolled back and its bad envs are reset (see the module docstring)."""
        key, k_rollout, k_targets, k_update = jax.random.split(state.key, 4)
        env_state, traj = self.rollout(state, k_rollout)
        state, metrics = self.learn(state, traj, k_targets, k_update, key)
        if self.guarded:
            env_state, bad = self.reset_bad_envs(env_state, traj, k_rollout)
            metrics["health/bad_envs"] = jnp.sum(bad, dtype=jnp.float32)
        return state.replace(env_state=env_state), metrics

    @property
    def guarded(self) -> bool:
        """Whether the NaN/Inf guard is compiled in (``config.max_bad_iterations > 0``)."""
        return self.config.max_bad_iterations > 0

    def bad_envs(self, traj: Transition, env_state: EnvState) -> jax.Array:
        """(N,) bool: envs with a non-finite observation or reward in the rollout or in the observation to act on
        next. ``traj`` is time-major (T, N, ...)."""
        ok = _finite_per_env(traj.rewards)
        for x in (traj.obs, traj.critic_obs, traj.next_obs, traj.next_critic_obs, env_state.obs[None],
                  env_state.critic_obs[None]):  # fmt: skip
            ok = ok & _finite_per_env(x)
        return ~ok

    def reset_bad_envs(self, env_state: EnvState, traj: Transition, k_rollout: jax.Array):
        """Reset the envs that went non-finite in this rollout; returns (env state, (N,) bool mask of them).

        The reset key is derived from the rollout key with ``fold_in`` (the rollout itself only ``split``s it), so
        it is fresh and the other keys of the iteration are unchanged by the guard."""
        bad = self.bad_envs(traj, env_state)
        return self.env.reset_where(env_state, bad, jax.random.fold_in(k_rollout, 1)), bad

    def guard(self, old: TrainState, new: TrainState, traj: Transition, metrics: dict[str, jax.Array]):
        """Keep ``new`` if the rollout, the update's ``metrics`` (losses, gradient norms) and the new learner state are
        all finite; else ``old`` with ``new``'s key and iteration counter. A select, not ``lax.cond``: both states
        exist anyway, and a cond copies its outputs (measured slower). Returns (state, health metrics)."""
        obs_ok = True
        for x in (traj.obs, traj.critic_obs, traj.next_obs, traj.next_critic_obs):
            obs_ok = obs_ok & jnp.all(jnp.isfinite(x))
        reward_ok = jnp.all(jnp.isfinite(traj.rewards))
        loss_ok = _all_finite(metrics)  # losses and the gradient norms of every minibatch (their means)
        # The network parameters and their Adam moments are not re-read: starting finite (the guard keeps them so),
        # they stay finite whenever every gradient norm is (a norm is inf as soon as a squared gradient overflows,
        # and Adam's step is then bounded by the learning rate). The duals and the statistics can still overflow.
        params_ok = _all_finite((new.log_duals, new.dual_opt, new.obs_stats, new.critic_obs_stats))
        ok = obs_ok & reward_ok & loss_ok & params_ok
        kept = old.replace(key=new.key, iteration=new.iteration, env_state=None)
        state = _select(ok, new.replace(env_state=None), kept).replace(env_state=new.env_state)
        flag = lambda good: (~good).astype(jnp.float32)
        health = {
            "health/rolled_back": flag(ok),
            "health/nonfinite_obs": flag(obs_ok),
            "health/nonfinite_reward": flag(reward_ok),
            "health/nonfinite_loss": flag(loss_ok),
            "health/nonfinite_params": flag(params_ok),
        }
        return state, health

    def learn(self, state: TrainState, traj: Transition, k_targets, k_update, next_key):
        """Everything after the rollout: targets, E epochs of updates, statistics, counters (env state untouched);
        with the guard on, rolled back to ``state`` (but for key and counter) if anything is non-finite."""
        old = state
        data = self.compute_targets(state, traj, k_targets)
        state, metrics = self.update(state, data, k_update)
        state = state.replace(
            obs_stats=state.obs_stats.update(traj.obs),
            critic_obs_stats=state.critic_obs_stats.update(traj.critic_obs),
            key=next_key,
            iteration=state.iteration + 1,
        )
        if self.guarded:
            state, health = self.guard(old, state, traj, metrics)
            metrics.update(health)
        metrics.update(
            alpha=jnp.exp(state.log_duals[0]),
            beta=jnp.exp(state.log_duals[1]),
            target_mean=jnp.mean(data.returns),
            clipped_target_frac=self.hl.clipped_fraction(data.returns),
            rollout_reward=jnp.mean(traj.rewards),
            episodes_ended=jnp.sum(jnp.maximum(traj.terminated, traj.truncated)),
        )
        return state, metrics

    # ---- several seeds in one program ---------------------------------------------------------------------
    def init_seeds(self, keys: jax.Array) -> TrainState:
        """``keys`` (S, 2), one per seed (the key ``init`` would get). Learner fields get a leading seed axis;
        the env state is one batch of S * N envs (seed s owns envs s*N .. s*N + N - 1)."""
        s, n = keys.shape[0], self.config.num_envs
        split = jax.vmap(lambda k: jax.random.split(k, 4))(keys)
        env_state = self.env.reset(split[0, 2])
        by_seed = lambda x: x.reshape(s, n, *x.shape[1:])
        learner = jax.vmap(self.init_learner)(
            split[:, 0], split[:, 1], split[:, 3], by_seed(env_state.obs), by_seed(env_state.critic_obs)
        )
        return learner.replace(env_state=env_state)

    def iteration_seeds(self, state: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
        """One iteration of every seed: the envs step as one batch (the env is never vmapped, see
        ``reppo.envs.playground``); acting and learning are vmapped over seeds. Metrics have shape (S,)."""
        c = self.config
        s, n = state.key.shape[0], c.num_envs
        split = jax.vmap(lambda k: jax.random.split(k, 4))(state.key)
        key, k_rollout, k_targets, k_update = (split[:, i] for i in range(4))
        rollout_keys = jax.vmap(jax.random.split)(k_rollout)  # (S, 2, 2): pool key, step key
        step_keys = jax.vmap(lambda k: jax.random.split(k, c.num_steps))(rollout_keys[:, 1])  # (S, T, 2)

        def act(obs, keys):
            action, log_prob = jax.vmap(self.act)(state.actor_params, state.obs_stats, obs.reshape(s, n, -1), keys)
            return action.reshape(s * n, -1), log_prob.reshape(s * n)

        env_state, traj = self.collect(state.env_state, rollout_keys[0, 0], act, jnp.swapaxes(step_keys, 0, 1))
        if self.guarded:  # one reset of the merged S * N batch (the env is never vmapped)
            env_state, bad = self.reset_bad_envs(env_state, traj, k_rollout[0])
        traj = jax.tree.map(lambda x: x.reshape(c.num_steps, s, n, *x.shape[2:]), traj)
        learner, metrics = jax.vmap(self.learn, in_axes=(0, 1, 0, 0, 0))(
            state.replace(env_state=None), traj, k_targets, k_update, key
        )
        if self.guarded:  # per-seed rollback happened inside the vmapped learn
            metrics["health/bad_envs"] = jnp.sum(bad.reshape(s, n), axis=1, dtype=jnp.float32)
        return learner.replace(env_state=env_state), metrics


def _adam(lr: float, max_grad_norm: float | None) -> optax.GradientTransformation:
    if max_grad_norm is None:
        return optax.adam(lr)
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr))


def make_train(config: Config, env: VecEnv, mesh: Mesh | None = None) -> tuple[Callable, Callable, REPPO]:
    """Build the pure functions of a run: ``init(key) -> TrainState`` and ``iteration(state) -> (state, metrics)``.

    ``config`` must be resolved (gamma, v_min, v_max filled in; see ``reppo.config.resolve``). With
    ``config.num_seeds > 1``, ``env`` holds ``num_seeds * num_envs`` envs, ``init`` takes one key per seed
    (shape (S, 2)) and every learner field and metric has a leading seed axis. With a ``mesh`` (``reppo.parallel``)
    the batch is split by rows over its devices; the caller places the state with ``parallel.state_shardings``.
    """
    if config.gamma is None or config.v_min is None or config.v_max is None:
        raise ValueError("make_train needs a resolved Config (gamma, v_min, v_max set); call reppo.config.resolve")
    if env.num_envs != config.num_envs * config.num_seeds:
        raise ValueError(
            f"env has {env.num_envs} envs; expected num_envs * num_seeds = {config.num_envs * config.num_seeds}"
        )
    hl = HLGauss.create(config.v_min, config.v_max, config.num_bins, config.hl_gauss_sigma)
    algo = REPPO(
        config=config,
        env=env,
        actor=Actor(env.action_size, config.actor_width, config.actor_depth, config.min_std, config.init_std),
        critic=Critic(config.critic_width, config.critic_depth, tuple(hl.to_probs(jnp.zeros(())).tolist())),
        actor_tx=_adam(config.actor_lr, config.max_grad_norm),
        critic_tx=_adam(config.critic_lr, config.max_grad_norm),
        dual_tx=_adam(config.dual_lr, None),
        hl=hl,
        mesh=mesh,
    )
    if config.num_seeds > 1:
        return algo.init_seeds, algo.iteration_seeds, algo
    return algo.init, algo.iteration, algo
