"""Video of one episode for the env families that render (``reppo video``, ``reppo train --video``).

Gymnasium envs render themselves (``render_mode="rgb_array"``; MuJoCo tasks through MuJoCo's offscreen renderer,
headless as :mod:`reppo.video` sets up). EnvPool's MuJoCo ports of Gymnasium tasks (``envpool:Hopper-v5``) are
rendered through the Gymnasium task of the same name (the same model and observation). The other families have no
renderer here yet and fail with one line.
"""

from __future__ import annotations

import numpy as np

from reppo.envs.families import split


def renders(env_id: str) -> bool:
    """Whether ``reppo video`` / ``--video`` can render ``env_id`` (Playground ids always can)."""
    try:
        return ":" not in env_id or bool(_gymnasium_twin(env_id))
    except ValueError:
        return False


def _gymnasium_twin(env_id: str) -> str:
    family, name = split(env_id)
    if family is not None and family.prefix == "gymnasium":
        return name
    if family is not None and family.prefix == "envpool":
        import gymnasium

        if name in gymnasium.registry:
            return name
    raise ValueError(f"video is not available for {env_id!r}; allowed: gymnasium: ids, envpool: ports of Gymnasium "
                     "tasks, and MuJoCo Playground ids")  # fmt: skip


def render_family_episode(env_id: str, policy, *, key, max_steps: int | None = None, width: int = 320,
                          height: int = 240, camera=None) -> tuple[np.ndarray, float, float]:  # fmt: skip
    """(frames (F, H, W, 3) uint8, undiscounted return, frames per second) of one episode of ``policy``."""
    import gymnasium

    from reppo.envs.gymnasium import seed_of
    from reppo.envs.spaces import action_map
    from reppo.video import check_gl

    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    name = _gymnasium_twin(env_id)
    check_gl()
    # MuJoCo tasks render at the size asked for; others (classic control: CartPole, ...) at their own size, resized
    mujoco = "mujoco" in str(gymnasium.spec(name).entry_point)
    kwargs = {"width": width, "height": height} if mujoco else {}
    if camera is not None:
        if not mujoco:
            raise ValueError(f"camera={camera!r}: {env_id!r} is not a MuJoCo task and has no cameras")
        kwargs["camera_id" if isinstance(camera, int) else "camera_name"] = camera
    env = gymnasium.make(name, render_mode="rgb_array", **kwargs)
    try:
        to_env = action_map(env.action_space)
        obs, _ = env.reset(seed=seed_of(key))
        frames, total, steps = [env.render()], 0.0, 0
        while max_steps is None or steps < max_steps:
            action = np.asarray(policy(np.asarray(obs, np.float32).reshape(1, -1)))[0]
            obs, reward, terminated, truncated, _ = env.step(to_env(action))
            frames.append(env.render())
            total, steps = total + float(reward), steps + 1
            if terminated or truncated:
                break
        fps = float(env.metadata.get("render_fps") or 30)
    finally:
        env.close()
    return _resize(np.stack(frames).astype(np.uint8), width, height), total, fps


def _resize(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of (F, H, W, 3) frames to (F, height, width, 3) (a no-op at that size)."""
    rows = np.arange(height) * frames.shape[1] // height
    cols = np.arange(width) * frames.shape[2] // width
    return frames[:, rows][:, :, cols]
