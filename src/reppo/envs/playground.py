"""MuJoCo Playground adapter and the final-observation auto-reset wrapper.

:class:`AutoResetVecEnv` turns any single-env object with the Playground API (``reset(rng) -> State``,
``step(State, action) -> State`` with ``.obs/.reward/.done/.info/.metrics``, ``action_size``) into a
:class:`reppo.envs.base.VecEnv` of ``num_envs`` copies with a time limit and auto-reset that keeps the true
final observation of every episode.

Why a reset pool. Computing a fresh reset state for every env on every step and ``jnp.where``-selecting it
in costs ``num_envs`` resets per step. Some Playground resets are far more expensive than a step
(CheetahRun's reset runs 200 physics "stabilise" steps: 512 resets take ~4.4 s on a 2-core CPU against ~0.02
s for a step of 512 envs), so the naive wrapper is dominated by resets whose results are thrown away. The
solver-convergence hypothesis (a freshly reset state, without a solver warm start, slowing the vmapped
solver loop) was measured and is not the cause: a step from fresh reset states costs the same as a
mid-episode step (the DM Control configs cap the solver at 1-4 iterations anyway). See
``benchmarks/rollout_reset.py``.

The default strategy (``"pool"``) keeps ``R`` ready reset states in ``EnvState.extra``. Envs whose episode
ends take the next unused pool entries (rank among this step's finished envs); ``prepare_rollout`` (once per
rollout, outside the per-step scan) regenerates only the entries consumed since the last refresh, in chunks
of ``reset_chunk_size`` inside a ``lax.while_loop`` whose trip count is the number of chunks actually
needed, so the reset cost scales with the number of episodes started, not with ``num_envs x steps``. Every
pool entry comes from its own fresh PRNG key and is used at most once. If a step finishes more episodes than
the pool has unused entries (very short episodes, or all envs ending together as in evaluation with
``randomize_steps=False``), that step resets its finished envs directly, again in chunks with fresh keys, so
an initial state is never repeated.

Branches are ``lax.cond``/``lax.switch`` on scalars: cheap under ``jit``/``scan``. Do not ``vmap`` ``step``
over several VecEnv states (batch with ``num_envs`` instead); under ``vmap`` both branches would run on
every step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from reppo.envs.base import EnvState, StepResult

IMPLS = ("jax", "warp")
RESET_STRATEGIES = ("pool", "direct", "naive")

# Rollout length assumed when sizing the default reset pool (the env does not know the trainer's T).
_POOL_REFERENCE_T = 64


class UnknownEnvError(ValueError):
    """The env id is not registered."""


class EnvLoadError(RuntimeError):
    """A registered env could not be built (e.g. its robot models are not installed)."""


def validate_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(repr(i) for i in IMPLS)}, got {impl!r}")
    return impl


@struct.dataclass
class ResetExtra:
    """``EnvState.extra`` of :class:`AutoResetVecEnv`."""

    key: jax.Array
    """PRNG key for resets made inside ``step`` (direct fallback, naive strategy); split on every use."""
    pool: Any
    """Inner states of ``R`` ready reset states (leading axis R); None for strategies without a pool."""
    pool_next: jax.Array
    """() int32, index of the next unused pool entry (the pool is used as a ring)."""
    pool_used: jax.Array
    """() int32, pool entries consumed since the last refresh (0..R)."""
    refreshes: jax.Array
    """() int32, number of ``prepare_rollout`` calls (folded into the caller's key: keys never repeat)."""
    direct_resets: jax.Array
    """() int32, number of steps that had to reset directly because the pool ran short (diagnostics)."""
    episode_return: jax.Array
    """(N,) float32, undiscounted return of each env's current episode so far."""
    completed_return_sum: jax.Array
    """() float32, cumulative sum of the returns of all finished episodes (diff it to log a mean return)."""
    completed_episodes: jax.Array
    """() int32, cumulative number of finished episodes."""


def _bcast(mask: jax.Array, x: jax.Array) -> jax.Array:
    return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))


def _split_obs(obs: Any, n: int) -> tuple[jax.Array, jax.Array]:
    """(actor obs, critic obs), each flattened to (n, size)."""
    if isinstance(obs, Mapping):
        if "state" not in obs:
            raise ValueError(f"dict observation without a 'state' entry (keys: {sorted(obs)})")
        actor = obs["state"]
        critic = obs.get("privileged_state", actor)
    else:
        actor = critic = obs
    return actor.reshape(n, -1).astype(jnp.float32), critic.reshape(n, -1).astype(jnp.float32)


def _finite(x: jax.Array) -> jax.Array:
    return jnp.where(jnp.isfinite(x), x, jnp.zeros_like(x))


class AutoResetVecEnv:
    """``num_envs`` copies of a Playground-API env with a time limit and final-observation auto-reset.

    Args:
        env: single-env object with Playground's ``reset``/``step``/``action_size``.
        num_envs: batch size N.
        episode_length: time limit in agent steps (one ``step`` call = ``action_repeat`` env steps).
        action_repeat: env steps per agent step (rewards summed; stops early on termination).
        randomize_steps: draw initial step counters uniformly in [0, episode_length) (training) or start all
            at 0 (evaluation).
        reset_pool_size: R, ready reset states kept for the ``"pool"`` strategy. Default
            ``min(N, ceil(2 * N * 64 / episode_length) + 16)``: twice the expected resets of a 64-step rollout
            plus a margin. Memory is the only cost of a larger pool (refreshes only redo consumed entries).
        reset_strategy: ``"pool"`` (default), ``"direct"`` (reset the finished envs inside ``step``, in
            chunks; cost per step scales with episodes ended, but pays a reset's latency on every step where
            an episode ends) or ``"naive"`` (N fresh resets every step, selected with ``where``; only for
            benchmarks).
        reset_chunk_size: resets computed per ``vmap`` call when refreshing the pool or resetting directly.
            Default 8 on CPU (work is what costs; the count is rounded up to a chunk), R on accelerators
            (latency is what costs).
        name: env id, for messages.
    """

    def __init__(
        self,
        env: Any,
        num_envs: int,
        episode_length: int,
        *,
        action_repeat: int = 1,
        randomize_steps: bool = True,
        reset_pool_size: int | None = None,
        reset_strategy: str = "pool",
        reset_chunk_size: int | None = None,
        name: str = "env",
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        if reset_strategy not in RESET_STRATEGIES:
            raise ValueError(f"reset_strategy must be one of {RESET_STRATEGIES}, got {reset_strategy!r}")
        self.env = env
        self.name = name
        self.num_envs = int(num_envs)
        self.episode_length = int(episode_length)
        self.action_repeat = int(action_repeat)
        self.randomize_steps = bool(randomize_steps)
        self.reset_strategy = reset_strategy
        self.action_size = int(env.action_size)
        # > 0: a discrete action space of that many actions (actions are int32 indices, not clipped)
        self.num_actions = int(getattr(env, "num_actions", 0) or 0)

        if reset_pool_size is None:
            expected = math.ceil(2 * self.num_envs * _POOL_REFERENCE_T / self.episode_length)
            reset_pool_size = min(self.num_envs, expected + 16)
        if reset_pool_size < 1:
            raise ValueError(f"reset_pool_size must be >= 1, got {reset_pool_size}")
        self.reset_pool_size = int(reset_pool_size)
        if reset_chunk_size is None:
            cap = self.reset_pool_size if jax.default_backend() != "cpu" else 8
            reset_chunk_size = min(self.reset_pool_size, cap)
        if reset_chunk_size < 1:
            raise ValueError(f"reset_chunk_size must be >= 1, got {reset_chunk_size}")
        self.reset_chunk_size = int(reset_chunk_size)

        self._read_env_shapes(env)

    def _read_env_shapes(self, env: Any) -> None:
        """From the abstract shapes of ``env.reset``: which state leaves are batched under vmap, the observation
        sizes, whether the critic sees a privileged observation, and the image layout of the observation."""
        key = jax.random.PRNGKey(0)
        abstract = jax.eval_shape(env.reset, key)
        # Which leaves of the env state carry a per-env batch axis under vmap. Not all do: MJX's warp backend
        # keeps e.g. its contact buffers and counters global to the batch. Reset swaps touch batched leaves
        # only (unbatched ones keep the stepped state's value, as Playground's own auto-reset wrapper does).
        single = jax.tree.leaves(abstract)
        b2, b3 = (jax.tree.leaves(jax.eval_shape(jax.vmap(env.reset), jax.random.split(key, b))) for b in (2, 3))
        self._batched = tuple(
            x2.shape == (2, *x.shape) and x3.shape == (3, *x.shape) for x, x2, x3 in zip(single, b2, b3, strict=True)
        )
        actor, critic = jax.eval_shape(lambda o: _split_obs(o, 1), abstract.obs)
        self.obs_size = int(actor.shape[-1])
        self.critic_obs_size = int(critic.shape[-1])
        self.asymmetric = isinstance(abstract.obs, Mapping) and "privileged_state" in abstract.obs
        # An image observation's layout (a gymnax MinAtar grid), kept for a CNN encoder when actor and critic see it
        image = getattr(env, "obs_image", None)
        fits = image is not None and image.height * image.width * image.channels == self.obs_size
        self.obs_image = image if fits and not self.asymmetric else None

    def __repr__(self) -> str:
        return (
            f"AutoResetVecEnv({self.name!r}, num_envs={self.num_envs}, episode_length={self.episode_length}, "
            f"obs_size={self.obs_size}, critic_obs_size={self.critic_obs_size}, "
            f"action_size={self.action_size}, strategy={self.reset_strategy!r}, pool={self.reset_pool_size})"
        )

    def _bmap(self, fn, target: Any, *others: Any) -> Any:
        """``fn`` over the batched leaves of env-state trees; unbatched leaves keep ``target``'s value."""
        leaves, treedef = jax.tree.flatten(target)
        rest = [treedef.flatten_up_to(o) for o in others]
        out = [fn(*ls) if b else ls[0] for b, *ls in zip(self._batched, leaves, *rest, strict=True)]
        return treedef.unflatten(out)

    # ------------------------------------------------------------------ single-env pieces (vmapped below)
    def _env_step(self, s: Any, a: jax.Array) -> tuple[Any, jax.Array, jax.Array]:
        """One agent step of one env: (state, summed reward, done in {0, 1})."""
        if self.action_repeat == 1:
            ns = self.env.step(s, a)
            return ns, ns.reward, ns.done

        def body(carry, _):
            s, r, d = carry
            ns = self.env.step(s, a)
            alive = d == 0
            ns = self._bmap(lambda new, old: jnp.where(alive, new, old), ns, s)
            return (ns, r + jnp.where(alive, ns.reward, 0.0), jnp.maximum(d, ns.done)), None

        zero = jnp.zeros((), jnp.float32)
        (ns, r, d), _ = jax.lax.scan(body, (s, zero, zero), None, length=self.action_repeat)
        return ns, r, d

    def _resets(self, key: jax.Array, n: int) -> Any:
        return jax.vmap(self.env.reset)(jax.random.split(key, n))

    def _chunked_resets_into(self, target: Any, slots: jax.Array, count: jax.Array, key: jax.Array) -> Any:
        """Write ``count`` fresh resets into ``target`` at ``slots[:count]`` (out-of-range slots are dropped).

        ``slots`` must hold at least ``count`` valid indices followed by padding; ``count`` may be traced.
        Runs ``ceil(count / C)`` chunks of ``C`` resets, each chunk from ``fold_in(key, chunk)``.
        """
        c = self.reset_chunk_size
        size = next(x for x, b in zip(jax.tree.leaves(target), self._batched, strict=True) if b).shape[0]
        slots = jnp.concatenate([slots.astype(jnp.int32), jnp.full((c,), size, jnp.int32)])

        def cond(carry):
            return carry[0] * c < count

        def body(carry):
            i, tgt = carry
            fresh = self._resets(jax.random.fold_in(key, i), c)
            j = i * c + jnp.arange(c)
            idx = jnp.where(j < count, jax.lax.dynamic_slice(slots, (i * c,), (c,)), size)
            tgt = self._bmap(lambda t, f: t.at[idx].set(f, mode="drop"), tgt, fresh)
            return i + 1, tgt

        _, target = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), target))
        return target

    # ------------------------------------------------------------------ VecEnv API
    def reset(self, key: jax.Array) -> EnvState:
        n = self.num_envs
        k_env, k_steps, k_extra = jax.random.split(key, 3)
        r = self.reset_pool_size if self.reset_strategy == "pool" else 0
        # One batched reset for the envs and the pool (one reset to compile, not two).
        both = self._resets(k_env, n + r)
        inner = self._bmap(lambda x: x[:n], both)
        pool = self._bmap(lambda x: x[n:], both) if r else None
        if self.randomize_steps:
            steps = jax.random.randint(k_steps, (n,), 0, self.episode_length, dtype=jnp.int32)
        else:
            steps = jnp.zeros((n,), jnp.int32)
        zero_i = jnp.zeros((), jnp.int32)
        extra = ResetExtra(
            key=k_extra,
            pool=pool,
            pool_next=zero_i,
            pool_used=zero_i,
            refreshes=zero_i,
            direct_resets=zero_i,
            episode_return=jnp.zeros((n,), jnp.float32),
            completed_return_sum=jnp.zeros((), jnp.float32),
            completed_episodes=zero_i,
        )
        obs, critic_obs = _split_obs(inner.obs, n)
        return EnvState(inner=inner, obs=obs, critic_obs=critic_obs, steps=steps, extra=extra)

    def prepare_rollout(self, state: EnvState, key: jax.Array) -> EnvState:
        """Regenerate the pool entries consumed since the last call (no-op for other strategies)."""
        if self.reset_strategy != "pool":
            return state
        ex: ResetExtra = state.extra
        r = self.reset_pool_size
        key = jax.random.fold_in(key, ex.refreshes)
        count = jnp.minimum(ex.pool_used, r)
        # The consumed entries are the `count` ring positions just before pool_next.
        slots = (ex.pool_next - count + jnp.arange(r)) % r
        pool = self._chunked_resets_into(ex.pool, slots, count, key)
        ex = ex.replace(pool=pool, pool_used=jnp.zeros((), jnp.int32), refreshes=ex.refreshes + 1)
        return state.replace(extra=ex)

    def step(self, state: EnvState, action: jax.Array) -> tuple[EnvState, StepResult]:
        n = self.num_envs
        ex: ResetExtra = state.extra
        action = action.astype(jnp.int32) if self.num_actions else jnp.clip(action, -1.0, 1.0)
        nxt, reward, done = jax.vmap(self._env_step)(state.inner, action)
        # Non-finite rewards and observations of a diverged physics state are passed on as they are, for the NaN/Inf
        # guard to count and act on (``reppo.algo.guard``: the update is rolled back and those envs reset).
        # Playground also reports such a state as terminated, so it is replaced at once by a reset state.
        reward = reward.astype(jnp.float32)
        next_obs, next_critic_obs = _split_obs(nxt.obs, n)

        steps = state.steps + 1
        terminated = done > 0
        truncated = (steps >= self.episode_length) & ~terminated
        ended = terminated | truncated

        inner, ex = self._auto_reset(nxt, ended, ex)

        ep_ret = ex.episode_return + _finite(reward)  # diagnostics only: one diverged step must not poison the sums
        ex = ex.replace(
            episode_return=jnp.where(ended, 0.0, ep_ret),
            completed_return_sum=ex.completed_return_sum + jnp.sum(jnp.where(ended, ep_ret, 0.0)),
            completed_episodes=ex.completed_episodes + jnp.sum(ended, dtype=jnp.int32),
        )
        obs, critic_obs = _split_obs(inner.obs, n)
        new_state = EnvState(
            inner=inner,
            obs=obs,
            critic_obs=critic_obs,
            steps=jnp.where(ended, 0, steps).astype(jnp.int32),
            extra=ex,
        )
        result = StepResult(
            reward=reward,
            terminated=terminated.astype(jnp.float32),
            truncated=truncated.astype(jnp.float32),
            next_obs=next_obs,
            next_critic_obs=next_critic_obs,
        )
        return new_state, result

    def reset_where(self, state: EnvState, mask: jax.Array, key: jax.Array) -> EnvState:
        """Reset the envs where ``mask`` (N,) is true with fresh initial states from ``key`` (direct resets, in
        chunks, as the pool fallback does); their step counters and episode returns restart at 0 and the abandoned
        episodes are not counted as completed. A scalar ``lax.cond``: costs nothing when no env is masked."""
        n = self.num_envs
        count = jnp.sum(mask, dtype=jnp.int32)
        ex: ResetExtra = state.extra

        def reset(args):
            inner, _, _, steps, episode_return = args
            slots = jnp.nonzero(mask, size=n, fill_value=n)[0]
            inner = self._chunked_resets_into(inner, slots, count, key)
            obs, critic_obs = _split_obs(inner.obs, n)
            return inner, obs, critic_obs, jnp.where(mask, 0, steps), jnp.where(mask, 0.0, episode_return)

        # Only the fields a reset changes go through the cond (not the reset pool).
        args = (state.inner, state.obs, state.critic_obs, state.steps, ex.episode_return)
        inner, obs, critic_obs, steps, episode_return = jax.lax.cond(count > 0, reset, lambda a: a, args)
        extra = ex.replace(episode_return=episode_return)
        return EnvState(inner=inner, obs=obs, critic_obs=critic_obs, steps=steps, extra=extra)

    # ------------------------------------------------------------------ auto-reset strategies
    def _auto_reset(self, nxt: Any, ended: jax.Array, ex: ResetExtra) -> tuple[Any, ResetExtra]:
        n = self.num_envs
        n_ended = jnp.sum(ended, dtype=jnp.int32)

        if self.reset_strategy == "naive":
            key, sub = jax.random.split(ex.key)
            fresh = self._resets(sub, n)
            inner = self._bmap(lambda x, f: jnp.where(_bcast(ended, x), f, x), nxt, fresh)
            return inner, ex.replace(key=key)

        def direct(args):
            inner, ex = args
            key, sub = jax.random.split(ex.key)
            slots = jnp.nonzero(ended, size=n, fill_value=n)[0]
            inner = self._chunked_resets_into(inner, slots, n_ended, sub)
            return inner, ex.replace(key=key, direct_resets=ex.direct_resets + 1)

        if self.reset_strategy == "direct":
            return jax.lax.cond(n_ended > 0, direct, lambda a: a, (nxt, ex))

        r = self.reset_pool_size

        k = self.reset_chunk_size

        def from_pool(args):
            # Copy pool entries pool_next, pool_next + 1, ... into the ended envs, k at a time (usually a
            # single round: only a few episodes end per step).
            inner, ex = args
            slots = jnp.nonzero(ended, size=r + k, fill_value=n)[0]  # n_ended <= r here

            def body(carry):
                i, inner = carry
                j = i * k + jnp.arange(k)
                fresh = self._bmap(lambda p: p[(ex.pool_next + j) % r], ex.pool)
                idx = jnp.where(j < n_ended, jax.lax.dynamic_slice(slots, (i * k,), (k,)), n)
                return i + 1, self._bmap(lambda t, f: t.at[idx].set(f, mode="drop"), inner, fresh)

            _, inner = jax.lax.while_loop(lambda c: c[0] * k < n_ended, body, (jnp.zeros((), jnp.int32), inner))
            ex = ex.replace(pool_next=(ex.pool_next + n_ended) % r, pool_used=ex.pool_used + n_ended)
            return inner, ex

        branch = jnp.where(n_ended == 0, 0, jnp.where(n_ended <= r - ex.pool_used, 1, 2))
        return jax.lax.switch(branch, [lambda a: a, from_pool, direct], (nxt, ex))


# ---------------------------------------------------------------------- Playground loading
def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _orientation_error(quat: jax.Array, goal: jax.Array) -> jax.Array:
    """Angle between two unit quaternions, 2 asin(min(|vector part of quat * goal^-1|, 1)), as Playground 0.2.0
    computes it, with ``jnp.minimum`` in place of ``jnp.clip(..., a_max=1.0)``."""
    from mujoco.mjx._src import math as mjx_math

    diff = mjx_math.normalize(mjx_math.quat_mul(quat, mjx_math.quat_inv(goal)))
    return 2.0 * jnp.arcsin(jnp.minimum(mjx_math.norm(diff[1:]), 1.0))


def _fix_removed_clip_keyword(env: Any) -> list[str]:
    """Playground 0.2.0's LeapCubeReorient (``_cube_orientation_error``) and PandaRobotiqPushCube
    (``_orientation_error``) call ``jnp.clip(x, a_max=1.0)``, a keyword that jax no longer has (reppo needs jax >=
    0.7), so their ``step`` raises TypeError. Where a method of ``env`` still does, this env (not the class) gets
    the same computation written with ``jnp.minimum``. Returns the names of the methods replaced."""
    import inspect
    import types

    if "a_max" in inspect.signature(jnp.clip).parameters:
        return []
    fixes = {
        "_cube_orientation_error": lambda self, data: _orientation_error(
            self.get_cube_orientation(data), self.get_cube_goal_orientation(data)
        ),
        "_orientation_error": lambda self, quat, goal: _orientation_error(quat, goal),
    }
    replaced = []
    for name, fix in fixes.items():
        method = getattr(type(env), name, None)
        if method is not None and "a_max=" in inspect.getsource(method):
            setattr(env, name, types.MethodType(fix, env))
            replaced.append(name)
    return replaced


def needs_menagerie(env_id: str) -> bool:
    """Whether ``env_id`` is a locomotion or manipulation task (its robot comes from the MuJoCo Menagerie)."""
    from mujoco_playground._src import locomotion, manipulation

    return env_id in locomotion.ALL_ENVS or env_id in manipulation.ALL_ENVS


def load_playground(env_id: str, impl: str, config_overrides: dict | None = None) -> tuple[Any, Any]:
    """(env, config) for a registered Playground id, with the physics backend chosen explicitly.

    Locomotion and manipulation tasks load their robot models from the installed robot-model wheels
    (:mod:`reppo.envs.assets`), never from the network: without them this fails at once with a one-line
    :class:`EnvLoadError` naming what to install.
    """
    from mujoco_playground import registry

    from reppo.envs.assets import INSTALL_HINT, MissingAssetsError, playground_menagerie

    validate_impl(impl)
    config = registry.get_default_config(env_id)
    overrides = dict(config_overrides or {})
    if "impl" in config:
        overrides["impl"] = impl
    menagerie, folder = needs_menagerie(env_id), None
    try:
        with playground_menagerie() if menagerie else contextlib.nullcontext() as folder:
            env = registry.load(env_id, config_overrides=overrides)
    except MissingAssetsError as e:
        raise EnvLoadError(f"env {env_id!r} needs {e}") from e
    except Exception as e:  # noqa: BLE001 - any failure to build the env is reported as one line
        if folder is not None:
            raise EnvLoadError(
                f"could not load env {env_id!r} from the robot models in {folder}: {_one_line(e)}; "
                f"{INSTALL_HINT} installs every robot Playground uses"
            ) from e
        raise EnvLoadError(f"could not load env {env_id!r}: {_one_line(e)}") from e
    _fix_removed_clip_keyword(env)
    if jax.process_count() > 1 and hasattr(env, "_mjx_model"):
        # MJX puts the model on the run's first device, which only process 0 can read (reppo.parallel); every
        # process needs its own copy on its own device.
        from mujoco import mjx

        env._mjx_model = mjx.put_model(env.mj_model, device=jax.local_devices()[0], impl=impl)
    return env, env._config if hasattr(env, "_config") else config
