"""EnvPool (``envpool:NAME``): C++ vector envs, through its Gymnasium interface, on the host path.

EnvPool's conventions, as read from envpool 1.2 and checked in ``tests/envs/test_families.py``: NEXT_STEP
autoreset (the step where an episode ends returns its final observation; the env would reset on the next call,
ignoring its action), so :class:`reppo.envs.gymnasium.GymnasiumVecEnv` resets the ended envs at once with
``reset(options={"reset_mask": ...})``, which returns only their rows (in ``info["env_id"]``) and clears EnvPool's
pending reset. Seeds are fixed when a pool is built (``reset(seed=...)`` is ignored), so :class:`EnvPoolVecEnv`
rebuilds the pool at its first reset with a seed drawn from the run's key. EnvPool's ports of MuJoCo Playground
tasks (``T1JoystickFlatTerrain-v1``, ...) return Playground's dict observation, ``state`` and ``privileged_state``.

Atari games (``Breakout-v5``, ``Pong-v5``, ...: discrete actions, docs/discrete.md) come with EnvPool's standard
wrappers (no-op starts, frame skip 4, 84 x 84 grey frames, a stack of 4, fire on reset). Training pools add the
usual training-only ones, a life loss ends the episode (``episodic_life``) and rewards are clipped to their sign
(``reward_clip``); evaluation pools have neither, so evaluation returns are game scores.
"""

from __future__ import annotations

import jax

from reppo.envs.gymnasium import GymnasiumVecEnv, seed_of


def _check(name: str) -> None:
    import envpool

    from reppo.envs.playground import UnknownEnvError

    ids = envpool.list_all_envs()
    if name not in ids:
        import difflib

        close = difflib.get_close_matches(name, ids, n=5, cutoff=0.6)
        hint = f"; did you mean: {', '.join('envpool:' + c for c in close)}?" if close else ""
        raise UnknownEnvError(f"unknown EnvPool env {name!r}{hint}")


def is_atari(name: str) -> bool:
    """An EnvPool Atari game (its config has ``episodic_life``)."""
    import envpool

    return "episodic_life" in envpool.make_spec(name).config._fields


class EnvPoolVecEnv(GymnasiumVecEnv):
    """A pool of ``num_envs`` EnvPool envs; the pool is rebuilt with a seed from the key at the first reset (at
    every reset with ``reseed``, which marks an evaluation pool)."""

    def __init__(self, name: str, num_envs: int, episode_length: int | None = None, reseed: bool = False):
        self.task, self.make_kwargs = name, {"max_episode_steps": episode_length} if episode_length else {}
        if is_atari(name):  # training-only Atari wrappers (module doc); evaluation scores the whole game
            self.make_kwargs.update(episodic_life=not reseed, reward_clip=not reseed)
        super().__init__(self._pool(num_envs, 0), episode_length, seed_on_reset=False, reseed=reseed,
                         name=f"envpool:{name}")  # fmt: skip

    def _pool(self, num_envs: int, seed: int):
        import envpool

        return envpool.make_gymnasium(self.task, num_envs=num_envs, seed=seed, **self.make_kwargs)

    def reset(self, key: jax.Array):
        if self.reseed or not self._seeded:
            self.env.close()
            self.env = self._pool(self.num_envs, seed_of(key))
        return super().reset(key)


def make_envpool(name: str, num_envs: int, episode_length: int | None = None, reseed: bool = False) -> EnvPoolVecEnv:
    _check(name)
    return EnvPoolVecEnv(name, num_envs, episode_length, reseed)


def defaults(name: str):
    """Task presets of an EnvPool id: a Playground port takes Playground's, a MuJoCo Gymnasium task Brax's (as
    ``gymnasium:`` does), an Atari game the authors' (gamma 0.99, values [-10, 10] for clipped rewards:
    ``config/env/atari.yaml`` of their ``dev`` branch), others gamma 0.99 and [-100, 100]
    (:mod:`reppo.envs.families`)."""
    import envpool

    from reppo.envs import TaskDefaults, available_envs, task_defaults
    from reppo.envs.families import _brax_like, _mujoco_task

    _check(name)
    steps = int(envpool.make_spec(name).config.max_episode_steps)
    playground = name.removeprefix("MuJoCoPlayground/").rsplit("-", 1)[0]
    if playground in available_envs():
        return task_defaults(playground)
    if _mujoco_task(name):
        return _brax_like(name, steps)
    if is_atari(name):
        return TaskDefaults(0.99, -10.0, 10.0, False, steps)
    return TaskDefaults(0.99, -100.0, 100.0, False, steps)
