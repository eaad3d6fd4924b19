"""The REPPO learner: ``init``, ``act`` and ``learn`` for one seed, pure and jittable (spec sections 1-6).

The learner never sees an environment or knows how a batch was collected: a rollout path (``reppo.rollout``)
fills a time-major :class:`Transition` batch with ``act`` and hands it to ``learn``, which computes the soft
TD(lambda) targets once, runs E epochs of M minibatches (critic step, actor step against the just-updated critic,
dual step) and then merges the batch into the observation statistics. No PRNG key is used twice.

Several seeds are a ``vmap`` of these functions (``reppo.seeds``); the NaN/Inf guard wraps ``learn``
(``reppo.algo.guard``); devices enter only through ``shard_rows``, a layout hint for the batch rows that
``reppo.parallel`` supplies (the identity on one device).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax
from flax import struct

from reppo.algo import categorical, distributions, losses
from reppo.algo.hl_gauss import HLGauss
from reppo.algo.targets import soft_td_lambda
from reppo.config import Config
from reppo.envs.spaces import Image
from reppo.nets import Actor, Critic, DiscreteActor, DiscreteCritic
from reppo.normalization import RunningStats


@dataclass(frozen=True)
class Spaces:
    """Sizes of what the learner sees: actor observation, critic observation (privileged or the same), action.

    ``num_actions > 0`` marks a discrete action space of that many actions (docs/discrete.md): actions are then
    int32 indices of shape (...,), and ``action_size`` is unused (conventionally 1)."""

    obs_size: int
    critic_obs_size: int
    action_size: int
    num_actions: int = 0
    image: Image | None = None
    """The layout of an image observation (actor's and critic's) that a CNN encoder reads; None: MLPs only."""

    @property
    def discrete(self) -> bool:
        return self.num_actions > 0

    @classmethod
    def of(cls, env, encoder: str = "auto") -> Spaces:
        """An env with a ``num_actions`` attribute > 0 has a discrete action space; one with an ``obs_image``
        gets a CNN encoder unless ``encoder`` is "mlp" (:func:`reppo.config.check_encoder` refuses "cnn" without
        an image)."""
        num_actions = int(getattr(env, "num_actions", 0) or 0)
        image = None if encoder == "mlp" else getattr(env, "obs_image", None)
        return cls(int(env.obs_size), int(env.critic_obs_size), int(env.action_size), num_actions, image)


@struct.dataclass
class Transition:
    """One rollout step of every env (time-major (T, N, ...) once collected); observations raw (unnormalised)."""

    obs: jax.Array
    critic_obs: jax.Array
    actions: jax.Array
    log_probs: jax.Array
    rewards: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    next_obs: jax.Array
    """The true next observation: the final one of an episode that ended at this step, before any reset."""
    next_critic_obs: jax.Array


@struct.dataclass
class LearnerState:
    """Everything the learner carries from one batch to the next."""

    actor_params: dict
    critic_params: dict
    log_duals: jax.Array
    """(log alpha, log beta)."""
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    dual_opt: optax.OptState
    obs_stats: RunningStats
    critic_obs_stats: RunningStats


def may_overflow(state: LearnerState):
    """The parts of a state that can overflow while every gradient norm is finite (re-read by the guard)."""
    return state.log_duals, state.dual_opt, state.obs_stats, state.critic_obs_stats


def _map_in_chunks(fn, rows_per_chunk: int, *rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``fn((chunk of each of rows...)) -> (values (chunk,), embeddings (chunk, width))`` over the rows in chunks of
    at most ``rows_per_chunk`` (``lax.map``, so memory is bounded), the last chunk padded; pads are dropped."""
    size = rows[0].shape[0]
    chunk = max(1, min(size, rows_per_chunk))
    num_chunks = -(-size // chunk)
    pad = num_chunks * chunk - size

    def chunked(x):
        x = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
        return x.reshape(num_chunks, chunk, *x.shape[1:])

    values, embeddings = jax.lax.map(fn, tuple(chunked(x) for x in rows))
    return values.reshape(-1)[:size], embeddings.reshape(-1, embeddings.shape[-1])[:size]


def _adam(lr: float | optax.Schedule, max_grad_norm: float | None) -> optax.GradientTransformation:
    if max_grad_norm is None:
        return optax.adam(lr)
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr))


def _learning_rate(lr: float, c: Config) -> float | optax.Schedule:
    """``lr``, or with ``c.lr_decay_steps`` a linear fall from ``lr`` to 0 over that many iterations' Adam steps
    (E x M per iteration), counted by the optimiser state, so that a resumed run continues the schedule."""
    if not c.lr_decay_steps:
        return lr
    steps = c.lr_decay_iterations * c.num_epochs * c.num_minibatches
    # The steps left, an exact integer, so the rate is exactly 0 from step N on (optax.linear_schedule's count / N
    # may be compiled as count * (1 / N), leaving a rate of about 1e-7 * lr).
    return lambda count: lr * jnp.maximum(steps - count, 0).astype(jnp.float32) / steps


def _identity(x: jax.Array, axis: int = 0) -> jax.Array:
    return x


class Learner(struct.PyTreeNode):
    """Static pieces of a learner (networks, optimisers, bin layout) built from a Config; methods are pure."""

    config: Config = struct.field(pytree_node=False)
    spaces: Spaces = struct.field(pytree_node=False)
    actor: Actor | DiscreteActor = struct.field(pytree_node=False)
    critic: Critic | DiscreteCritic = struct.field(pytree_node=False)
    actor_tx: optax.GradientTransformation = struct.field(pytree_node=False)
    critic_tx: optax.GradientTransformation = struct.field(pytree_node=False)
    dual_tx: optax.GradientTransformation = struct.field(pytree_node=False)
    hl: HLGauss = struct.field(pytree_node=False)
    shard_rows: Callable = struct.field(pytree_node=False, default=_identity)
    """``shard_rows(x, axis=0)``: lays ``x``'s batch-row axis out over the devices (``reppo.parallel``)."""

    @classmethod
    def create(cls, config: Config, spaces: Spaces, shard_rows: Callable | None = None) -> Learner:
        """``config`` must be resolved (gamma, v_min, v_max filled in; see ``reppo.config.resolve``)."""
        if config.gamma is None or config.v_min is None or config.v_max is None or config.critic_width is None:
            raise ValueError(
                "the learner needs a resolved Config (gamma, v_min, v_max, critic_width set); call reppo.config.resolve"
            )
        c = config
        hl = HLGauss.create(c.v_min, c.v_max, c.num_bins, c.hl_gauss_sigma)
        zero_value_probs = tuple(hl.to_probs(jnp.zeros(())).tolist())
        if spaces.discrete:
            actor = DiscreteActor(spaces.num_actions, c.actor_width, c.actor_depth, image=spaces.image)
            critic = DiscreteCritic(spaces.num_actions, c.critic_width, c.critic_depth, zero_value_probs,
                                    image=spaces.image)  # fmt: skip
        else:
            actor = Actor(spaces.action_size, c.actor_width, c.actor_depth, c.min_std, c.init_std, image=spaces.image)
            critic = Critic(c.critic_width, c.critic_depth, zero_value_probs, image=spaces.image)
        return cls(
            config=c,
            spaces=spaces,
            actor=actor,
            critic=critic,
            actor_tx=_adam(_learning_rate(c.actor_lr, c), c.max_grad_norm),
            critic_tx=_adam(_learning_rate(c.critic_lr, c), c.max_grad_norm),
            dual_tx=_adam(c.dual_lr, None),
            hl=hl,
            shard_rows=shard_rows or _identity,
        )

    # ---- init and acting ----------------------------------------------------------------------------------
    def init(self, key: jax.Array, obs: jax.Array, critic_obs: jax.Array) -> LearnerState:
        """Fresh networks, optimisers and duals; statistics from the first observations (N, size), so that the
        first rollout is already normalised."""
        k_actor, k_critic = jax.random.split(key)
        s, c = self.spaces, self.config
        actor_params = self.actor.init(k_actor, jnp.zeros((1, s.obs_size)))
        dummy_action = jnp.zeros((1,), jnp.int32) if s.discrete else jnp.zeros((1, s.action_size))
        critic_params = self.critic.init(k_critic, jnp.zeros((1, s.critic_obs_size)), dummy_action)
        log_duals = jnp.log(jnp.array([c.init_alpha, c.init_beta], jnp.float32))
        return LearnerState(
            actor_params=actor_params,
            critic_params=critic_params,
            log_duals=log_duals,
            actor_opt=self.actor_tx.init(actor_params),
            critic_opt=self.critic_tx.init(critic_params),
            dual_opt=self.dual_tx.init(log_duals),
            obs_stats=RunningStats.create(s.obs_size).update(obs),
            critic_obs_stats=RunningStats.create(s.critic_obs_size).update(critic_obs),
        )

    def act(self, state: LearnerState, obs: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """a ~ pi_theta(.|x) for raw observations, clipped for the env; returns (action, log pi(a|x)). Discrete:
        int32 action indices (N,)."""
        if self.spaces.discrete:
            return categorical.sample(key, self.actor.apply(state.actor_params, state.obs_stats.normalize(obs)))
        mean, std = self.actor.apply(state.actor_params, state.obs_stats.normalize(obs))
        action, _, log_prob = distributions.sample(key, mean, std)
        return distributions.env_action(action), log_prob

    def critic_q(self, critic_params, critic_obs: jax.Array, actions: jax.Array) -> jax.Array:
        if self.spaces.discrete:
            q = self.critic_q_all(critic_params, critic_obs)
            return jnp.take_along_axis(q, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]
        logits = self.critic.apply(critic_params, critic_obs, actions, method="q_logits")
        return self.hl.to_value(logits)

    def critic_q_all(self, critic_params, critic_obs: jax.Array) -> jax.Array:
        """Discrete: Q(x, a) for every action in one pass of the per-action head, (..., A)."""
        return self.hl.to_value(self.critic.apply(critic_params, critic_obs, method="q_logits"))

    def head_saturation(self, critic_params, critic_obs: jax.Array, actions: jax.Array) -> jax.Array:
        """max over the rows and bins of |dQ/dl_j| (``HLGauss.value_logit_grad``) of the critic at normalised
        observations ``critic_obs`` and ``actions``: how far the HL-Gauss head's softmax is saturated. Near 0 when
        the mass sits on a few bins (as the initial logit offset puts it around Q = 0; spec section 4); about
        (v_max - v_min) / (2 K_b) for a uniform softmax. Discrete: over every action's head."""
        if self.spaces.discrete:
            logits = self.critic.apply(critic_params, critic_obs, method="q_logits")
        else:
            logits = self.critic.apply(critic_params, critic_obs, actions, method="q_logits")
        return jnp.max(jnp.abs(self.hl.value_logit_grad(logits)))

    # ---- targets ------------------------------------------------------------------------------------------
    def soft_values(self, state: LearnerState, next_obs: jax.Array, next_critic_obs: jax.Array, key: jax.Array):
        """V(x) = (1/K) sum_k [Q(x, a_k) - alpha log pi(a_k|x)], a_k ~ pi_theta (spec section 3), evaluated in
        chunks of at most ``value_chunk_size`` (state, sample) rows, so memory stays bounded for any K.

        Row i's K pre-tanh noises are ``normal(fold_in(key, i), (K, action_size))``, so the values do not depend on
        the chunking. Inputs are flat and normalised, (B, ...). Also returns phi(x, a_1) for the first sample, the
        auxiliary loss's next-embedding target, so that it is not recomputed in every epoch.

        Discrete actions: the exact V(x) = sum_a pi(a|x) [Q(x, a) - alpha log pi(a|x)] and phi(x) (no key used;
        see ``discrete_soft_values``)."""
        if self.spaces.discrete:
            return self.discrete_soft_values(state, next_obs, next_critic_obs)
        c = self.config
        k_samples, action_size = c.num_value_samples, self.spaces.action_size
        alpha = jnp.exp(state.log_duals[0])
        size = next_obs.shape[0]

        def value_chunk(args):
            obs, critic_obs, row_keys = args
            mean, std = self.actor.apply(state.actor_params, obs)
            noise = jax.vmap(lambda k: jax.random.normal(k, (k_samples, action_size), mean.dtype))(row_keys)
            u = mean + std * jnp.swapaxes(noise, 0, 1)  # (K, chunk, action_size)
            log_probs = distributions.log_prob_from_pre_tanh(u, mean, std)
            actions = distributions.env_action(jnp.tanh(u))
            critic_in = jnp.broadcast_to(critic_obs, (k_samples, *critic_obs.shape))
            emb = self.critic.apply(state.critic_params, critic_in, actions, method="embed")
            q = self.hl.to_value(self.critic.apply(state.critic_params, emb, method="logits"))
            return jnp.mean(q - alpha * log_probs, axis=0), emb[0]

        row_keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(size))
        return _map_in_chunks(value_chunk, c.value_chunk_size // k_samples, next_obs, next_critic_obs, row_keys)

    def discrete_soft_values(self, state: LearnerState, next_obs: jax.Array, next_critic_obs: jax.Array):
        """Exact V(x) = sum_a pi(a|x) [Q(x, a) - alpha log pi(a|x)] (docs/discrete.md, section 3) and phi(x), in
        chunks of at most ``value_chunk_size // A`` states (each state costs A Q-heads of K_b logits)."""
        c = self.config
        alpha = jnp.exp(state.log_duals[0])

        def value_chunk(args):
            obs, critic_obs = args
            logits = self.actor.apply(state.actor_params, obs)
            emb = self.critic.apply(state.critic_params, critic_obs, method="embed")
            q = self.hl.to_value(self.critic.apply(state.critic_params, emb, method="logits"))
            return categorical.soft_value(logits, q, alpha), emb

        return _map_in_chunks(value_chunk, c.value_chunk_size // self.spaces.num_actions, next_obs, next_critic_obs)

    def targets(
        self, state: LearnerState, batch: Transition, key: jax.Array
    ) -> losses.Minibatch | losses.DiscreteMinibatch:
        """Soft TD(lambda) targets for the whole batch (once per iteration) and the flat, normalised samples."""
        num_steps, num_envs = batch.rewards.shape
        flat = lambda x: x.reshape(num_steps * num_envs, *x.shape[2:])
        norm_obs, norm_critic = state.obs_stats.normalize, state.critic_obs_stats.normalize
        next_critic_obs = flat(norm_critic(batch.next_critic_obs))
        next_values, next_embedding = self.soft_values(state, flat(norm_obs(batch.next_obs)), next_critic_obs, key)
        # log pi(a_{t+1} | x_{t+1}): pi_theta = pi_old here, so the rollout's own log-probs are exact.
        next_log_probs = jnp.concatenate([batch.log_probs[1:], batch.log_probs[-1:]], axis=0)
        c = self.config
        returns = soft_td_lambda(
            batch.rewards,
            batch.terminated,
            batch.truncated,
            next_values.reshape(num_steps, num_envs),
            next_log_probs,
            jnp.exp(state.log_duals[0]),
            c.gamma,
            c.lam,
        )
        obs = flat(norm_obs(batch.obs))
        if self.spaces.discrete:
            data = losses.DiscreteMinibatch(
                obs=obs,
                critic_obs=flat(norm_critic(batch.critic_obs)),
                actions=flat(batch.actions).astype(jnp.int32),
                rewards=flat(batch.rewards),
                terminated=flat(batch.terminated),
                returns=flat(returns),
                next_embedding=next_embedding,
                old_logits=self.actor.apply(state.actor_params, obs),  # pi_old = pi_theta at this point
            )
            return jax.tree.map(self.shard_rows, data)
        old_mean, old_std = self.actor.apply(state.actor_params, obs)  # pi_old = pi_theta at this point
        data = losses.Minibatch(
            obs=obs,
            critic_obs=flat(norm_critic(batch.critic_obs)),
            actions=flat(batch.actions),
            rewards=flat(batch.rewards),
            terminated=flat(batch.terminated),
            returns=flat(returns),
            next_embedding=next_embedding,
            old_mean=old_mean,
            old_std=old_std,
        )
        return jax.tree.map(self.shard_rows, data)

    # ---- update -------------------------------------------------------------------------------------------
    def update_minibatch(self, state: LearnerState, mb: losses.Minibatch, key: jax.Array):
        """Critic step, actor step against the just-updated critic, dual step (spec sections 4, 5)."""
        if self.spaces.discrete:
            return self.discrete_update_minibatch(state, mb)
        c = self.config
        critic_params, critic_opt, critic_info = self._critic_step(state, losses.critic_loss, mb)
        # the critic's new parameters are closed over, so they get no gradient from the actor loss
        alpha, beta = jnp.exp(state.log_duals[0]), jnp.exp(state.log_duals[1])
        critic_q = lambda x, a: self.critic_q(critic_params, x, a)
        actor_loss = lambda params: losses.actor_loss(
            params, self.actor.apply, old_mean=mb.old_mean, old_std=mb.old_std, critic_q=critic_q, obs=mb.obs,
            critic_obs=mb.critic_obs, key=key, alpha=alpha, beta=beta, kl_bound=c.kl_bound,
            num_kl_samples=c.num_kl_samples,
        )  # fmt: skip
        actor_params, actor_opt, stats, actor_info = self._actor_step(state, actor_loss)
        log_duals, dual_opt = self._dual_step(state, stats, -c.entropy_coef * self.spaces.action_size)
        new_state = state.replace(
            actor_params=actor_params, critic_params=critic_params, log_duals=log_duals,
            actor_opt=actor_opt, critic_opt=critic_opt, dual_opt=dual_opt,
        )  # fmt: skip
        return new_state, {**critic_info, **actor_info}

    def discrete_update_minibatch(self, state: LearnerState, mb: losses.DiscreteMinibatch):
        """The same three steps with the discrete losses (docs/discrete.md): exact sums over the actions, so the
        minibatch key is not used."""
        c = self.config
        critic_params, critic_opt, critic_info = self._critic_step(state, losses.discrete_critic_loss, mb)
        # Q(x, .) of the just-updated critic, a constant for the actor loss
        alpha, beta = jnp.exp(state.log_duals[0]), jnp.exp(state.log_duals[1])
        q = jax.lax.stop_gradient(self.critic_q_all(critic_params, mb.critic_obs))
        actor_loss = lambda params: losses.discrete_actor_loss(
            params, self.actor.apply, old_logits=mb.old_logits, q=q, obs=mb.obs, alpha=alpha, beta=beta,
            kl_bound=c.kl_bound,
        )  # fmt: skip
        actor_params, actor_opt, stats, actor_info = self._actor_step(state, actor_loss)
        target_entropy = categorical.target_entropy(self.spaces.num_actions, c.entropy_coef)
        log_duals, dual_opt = self._dual_step(state, stats, target_entropy)
        new_state = state.replace(
            actor_params=actor_params, critic_params=critic_params, log_duals=log_duals,
            actor_opt=actor_opt, critic_opt=critic_opt, dual_opt=dual_opt,
        )  # fmt: skip
        return new_state, {**critic_info, **actor_info}

    def _critic_step(self, state: LearnerState, loss: Callable, mb):
        """One clipped Adam step of the critic on ``loss(params, apply, mb, hl, aux_coef)``."""
        c = self.config
        (_, info), grads = jax.value_and_grad(loss, has_aux=True)(
            state.critic_params, self.critic.apply, mb, self.hl, c.aux_coef
        )
        updates, critic_opt = self.critic_tx.update(grads, state.critic_opt, state.critic_params)
        info["critic_grad_norm"] = optax.tree.norm(grads)
        info["critic_clip_frac"] = (info["critic_grad_norm"] > c.max_grad_norm).astype(jnp.float32)
        return optax.apply_updates(state.critic_params, updates), critic_opt, info

    def _actor_step(self, state: LearnerState, loss: Callable):
        """One clipped Adam step of the actor on ``loss(params) -> (value, (dual statistics, metrics))``."""
        (_, (stats, info)), grads = jax.value_and_grad(loss, has_aux=True)(state.actor_params)
        updates, actor_opt = self.actor_tx.update(grads, state.actor_opt, state.actor_params)
        info["actor_grad_norm"] = optax.tree.norm(grads)
        info["actor_clip_frac"] = (info["actor_grad_norm"] > self.config.max_grad_norm).astype(jnp.float32)
        return optax.apply_updates(state.actor_params, updates), actor_opt, stats, info

    def _dual_step(self, state: LearnerState, stats, target_entropy: float):
        """One Adam step of log(alpha), log(beta) on the dual losses (spec section 5)."""
        grads = jax.grad(losses.dual_loss)(state.log_duals, stats, target_entropy, self.config.kl_bound)
        updates, dual_opt = self.dual_tx.update(grads, state.dual_opt, state.log_duals)
        return optax.apply_updates(state.log_duals, updates), dual_opt

    def update(self, state: LearnerState, data: losses.Minibatch | losses.DiscreteMinibatch, key: jax.Array):
        """E epochs of M shuffled minibatches (pi_old, the actor before the update, is in ``data``). The metrics are
        means over the E x M steps: ``critic_clip_frac`` and ``actor_clip_frac`` are the fractions of steps whose
        global gradient norm exceeded ``max_grad_norm`` (and was clipped to it)."""
        c = self.config
        size = data.returns.shape[0]
        minibatch_size = size // c.num_minibatches

        def epoch(state: LearnerState, epoch_key: jax.Array):
            k_perm, k_mb = jax.random.split(epoch_key)
            perm = jax.random.permutation(k_perm, size).reshape(c.num_minibatches, minibatch_size)

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

    def learn(self, state: LearnerState, batch: Transition, key: jax.Array):
        """Targets, E epochs of updates, then the observation statistics (spec section 1, steps 3-5).

        ``batch`` is time-major (T, N, ...). Returns the new state and the iteration's metrics."""
        k_targets, k_update = jax.random.split(key)
        data = self.targets(state, batch, k_targets)
        new, metrics = self.update(state, data, k_update)
        new = new.replace(
            obs_stats=new.obs_stats.update(batch.obs),
            critic_obs_stats=new.critic_obs_stats.update(batch.critic_obs),
        )
        metrics.update(
            alpha=jnp.exp(new.log_duals[0]),
            beta=jnp.exp(new.log_duals[1]),
            target_mean=jnp.mean(data.returns),
            clipped_target_frac=self.hl.clipped_fraction(data.returns),
            rollout_reward=jnp.mean(batch.rewards),
            episodes_ended=jnp.sum(jnp.maximum(batch.terminated, batch.truncated)),
        )
        return new, metrics
