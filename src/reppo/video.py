"""Render one episode of a policy on a MuJoCo Playground task to an MP4, headless.

Frames come from Playground's own ``env.render`` (an offscreen ``mujoco.Renderer``) and are encoded as H.264 by
``imageio`` with the ffmpeg binary that the ``imageio-ffmpeg`` wheel ships.

Headless OpenGL. MuJoCo picks its GL backend from ``MUJOCO_GL`` when ``mujoco`` is first imported. Importing
this module sets a default on Linux when the variable is unset: ``egl`` if Mesa's (or NVIDIA's) EGL can be
loaded, else ``osmesa`` if ``libOSMesa`` can. If ``mujoco`` was already imported with no ``MUJOCO_GL`` (its
default, GLFW, needs a display) and there is no display, rendering switches to the chosen headless backend.
A fresh Debian/Ubuntu machine needs Mesa's EGL and software rasteriser::

    apt-get install -y --no-install-recommends libegl1 libegl-mesa0 libopengl0 libgl1-mesa-dri

(or ``libosmesa6`` and ``MUJOCO_GL=osmesa``). Set ``MUJOCO_GL`` yourself to override the default.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import sys
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

HEADLESS_BACKENDS = ("egl", "osmesa")
APT_EGL = "apt-get install -y --no-install-recommends libegl1 libegl-mesa0 libopengl0 libgl1-mesa-dri"
APT_OSMESA = "apt-get install -y --no-install-recommends libosmesa6"


def _loadable(*names: str) -> bool:
    try:
        for name in names:
            ctypes.CDLL(name)
    except OSError:
        return False
    return True


def default_gl_backend() -> str | None:
    """The headless backend to use on Linux when ``MUJOCO_GL`` is unset (None on other systems)."""
    if not sys.platform.startswith("linux"):
        return None
    platform = os.environ.get("PYOPENGL_PLATFORM", "").lower()
    if platform in HEADLESS_BACKENDS:  # mujoco's backend must match PyOpenGL's platform
        return platform
    if _loadable("libEGL.so.1", "libOpenGL.so.0"):
        return "egl"
    if _loadable("libOSMesa.so.8") or _loadable("libOSMesa.so.6") or _loadable("libOSMesa.so"):
        return "osmesa"
    return "egl"  # nothing found: fail later with the EGL install hint


if "MUJOCO_GL" not in os.environ and (_backend := default_gl_backend()) is not None:
    os.environ["MUJOCO_GL"] = _backend


# ---------------------------------------------------------------------- OpenGL check
def _gl_error(backend: str, err: BaseException) -> RuntimeError:
    text = str(err).strip().splitlines()
    detail = f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")
    return RuntimeError(
        f"no working OpenGL for offscreen rendering (MUJOCO_GL={backend or '<unset>'}; {detail}); "
        f"install Mesa EGL ({APT_EGL}) and set MUJOCO_GL=egl, or OSMesa ({APT_OSMESA}) and set MUJOCO_GL=osmesa"
    )


def _gl_context_module():
    try:
        from mujoco.rendering.classic import gl_context  # newer mujoco; older ones: mujoco.gl_context
    except ImportError:
        from mujoco import gl_context
    return gl_context


def _use_headless_context(gl_context) -> None:
    """If mujoco was imported without MUJOCO_GL (GLFW) and there is no display, switch to EGL/OSMesa."""
    chosen = getattr(gl_context, "_MUJOCO_GL", None)
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if chosen != "" or has_display or not sys.platform.startswith("linux"):
        return
    backend = os.environ.get("MUJOCO_GL", "").lower() or default_gl_backend()
    if backend == "egl":
        from mujoco.egl import GLContext
    elif backend == "osmesa":
        from mujoco.osmesa import GLContext
    else:
        return
    gl_context.GLContext = GLContext


_GL_OK = False


def check_gl() -> None:
    """Render a tiny scene offscreen once; raise a one-line RuntimeError if no GL backend works."""
    global _GL_OK
    if _GL_OK:
        return
    backend = os.environ.get("MUJOCO_GL", "")
    try:
        import mujoco

        _use_headless_context(_gl_context_module())
        model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='.1'/></worldbody></mujoco>")
        renderer = mujoco.Renderer(model, height=8, width=8)
        try:
            data = mujoco.MjData(model)
            mujoco.mj_forward(model, data)
            renderer.update_scene(data)
            renderer.render()
        finally:
            renderer.close()
    except Exception as e:  # noqa: BLE001 - any GL failure becomes the one-line hint
        raise _gl_error(backend, e) from e
    _GL_OK = True


# ---------------------------------------------------------------------- rollout
class _RenderData(NamedTuple):
    """The fields of ``mjx.Data`` that Playground's ``render_array`` reads."""

    qpos: Any
    qvel: Any
    mocap_pos: Any
    mocap_quat: Any
    xfrc_applied: Any


class RenderState(NamedTuple):
    """A host-side snapshot of a Playground ``State``, enough for ``env.render``."""

    data: _RenderData


def snapshot(state: Any) -> RenderState:
    """The render fields of a (single, unbatched) Playground state, as a pytree (call under jit or device_get)."""
    d = state.data
    return RenderState(_RenderData(d.qpos, d.qvel, d.mocap_pos, d.mocap_quat, d.xfrc_applied))


def _actor_obs(obs: Any) -> jax.Array:
    if isinstance(obs, Mapping):
        obs = obs["state"]
    return jnp.asarray(obs, jnp.float32).reshape(1, -1)


class _Runner:
    """A loaded env with jitted single-env reset and agent step (``action_repeat`` env steps, as in training)."""

    def __init__(self, env_id: str, impl: str):
        from reppo.envs import make_env

        vec = make_env(env_id, 1, impl=impl, randomize_steps=False)
        self.env = vec.env
        self.episode_length = vec.episode_length
        self.action_repeat = vec.action_repeat
        self.action_size = vec.action_size
        env, repeat = vec.env, vec.action_repeat

        def reset(key):
            s = env.reset(key)
            return s, _actor_obs(s.obs), snapshot(s)

        def step(s, a):
            if repeat == 1:
                ns = env.step(s, a)
                r, d = ns.reward, ns.done
            else:  # as AutoResetVecEnv._env_step: rewards summed, stop at termination

                def body(carry, _):
                    s, r, d = carry
                    ns = env.step(s, a)
                    alive = d == 0
                    ns = jax.tree.map(lambda new, old: jnp.where(alive, new, old), ns, s)
                    return (ns, r + jnp.where(alive, ns.reward, 0.0), jnp.maximum(d, ns.done)), None

                zero = jnp.zeros((), jnp.float32)
                (ns, r, d), _ = jax.lax.scan(body, (s, zero, zero), None, length=repeat)
            return ns, _actor_obs(ns.obs), r, d, snapshot(ns)

        self.reset = jax.jit(reset)
        self.step = jax.jit(step)

    @property
    def fps(self) -> float:
        return 1.0 / (float(self.env.dt) * self.action_repeat)

    def rollout(
        self, policy: Callable[[np.ndarray], np.ndarray], key: jax.Array, max_steps: int | None
    ) -> tuple[list[RenderState], float]:
        """One episode: the states before every step plus the final (pre-reset) one, and the return."""
        limit = self.episode_length if max_steps is None else min(max_steps, self.episode_length)
        state, obs, snap = self.reset(key)
        states = [jax.device_get(snap)]
        ret = 0.0
        for _ in range(limit):
            action = np.asarray(policy(np.asarray(obs)), np.float32)
            if action.size != self.action_size:
                raise ValueError(f"policy returned actions of shape {action.shape}, expected (1, {self.action_size})")
            action = np.clip(action.reshape(self.action_size), -1.0, 1.0)
            state, obs, reward, done, snap = self.step(state, action)
            reward, done, snap = jax.device_get((reward, done, snap))
            states.append(snap)
            reward = float(reward)
            ret += reward if math.isfinite(reward) else 0.0
            if float(done) > 0:
                break
        return states, ret


@functools.lru_cache(maxsize=4)
def _runner(env_id: str, impl: str) -> _Runner:
    return _Runner(env_id, impl)


# ---------------------------------------------------------------------- rendering
TRACKING_CAMERA = "track"
"""The camera Playground's locomotion robots carry, following the torso; videos use it when the model has it."""


def default_camera(model: Any) -> str | None:
    """``"track"`` if the model has that camera (locomotion robots, which walk out of a fixed view), else None
    (MuJoCo's free camera, looking at the whole model)."""
    names = {model.camera(i).name for i in range(model.ncam)}
    return TRACKING_CAMERA if TRACKING_CAMERA in names else None


def render_states(
    env: Any,
    states: Sequence[Any],
    *,
    width: int = 320,
    height: int = 240,
    camera: str | int | None = None,
) -> np.ndarray:
    """Frames (F, H, W, 3) uint8 of Playground states (or :class:`RenderState` snapshots) via ``env.render``.

    ``camera``: a camera name or index of the model; None: :func:`default_camera`."""
    check_gl()
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    model = env.mj_model
    camera = default_camera(model) if camera is None else camera
    if isinstance(camera, str):
        names = [model.camera(i).name for i in range(model.ncam)]
        if camera not in names:
            raise ValueError(f"unknown camera {camera!r}; this model has: {', '.join(names) or 'none'}")
    elif camera is not None and not -1 <= camera < model.ncam:
        raise ValueError(f"camera index {camera} out of range [-1, {model.ncam})")
    # The offscreen framebuffer must hold the frame (640x480 unless the model sets more).
    vis = model.vis.global_
    vis.offwidth, vis.offheight = max(vis.offwidth, width), max(vis.offheight, height)
    frames = env.render(list(states), height=height, width=width, camera=camera)
    return np.stack([np.asarray(f, np.uint8) for f in frames])


def render_frames(
    env_id: str,
    policy: Callable[[np.ndarray], np.ndarray],
    *,
    key: jax.Array,
    impl: str = "jax",
    max_steps: int | None = None,
    width: int = 320,
    height: int = 240,
    camera: str | int | None = None,
) -> tuple[np.ndarray, float]:
    """Run one episode and return its frames (F, H, W, 3) uint8, F = steps + 1, and the undiscounted return.

    ``policy`` maps raw actor observations (1, obs_size) to actions (1, action_size) in [-1, 1].
    The episode stops at termination, at the time limit or after ``max_steps`` agent steps.
    """
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    check_gl()  # fail before the rollout
    runner = _runner(env_id, impl)
    states, ret = runner.rollout(policy, key, max_steps)
    return render_states(runner.env, states, width=width, height=height, camera=camera), ret


def write_video(frames: np.ndarray | Sequence[np.ndarray], path: str | Path, fps: float) -> Path:
    """Write uint8 RGB frames as an H.264 MP4, atomically (temp file in the same folder, then rename)."""
    import imageio.v2 as imageio

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty (F, H, W, 3) array, got shape {frames.shape}")
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        raise ValueError(f"H.264 needs an even width and height, got {w}x{h}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # ffmpeg creates the temp file (so it gets the usual umask permissions); the .mp4 suffix picks the container.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.mp4")
    try:
        with warnings.catch_warnings():  # JAX warns on any fork, even the fork+exec that starts ffmpeg
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            writer = imageio.get_writer(
                tmp,
                format="FFMPEG",
                mode="I",
                fps=fps,
                codec="libx264",
                pixelformat="yuv420p",
                macro_block_size=2,
                ffmpeg_log_level="error",
            )
            with writer:
                for frame in frames:
                    writer.append_data(np.ascontiguousarray(frame, np.uint8))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class VideoResult:
    """What :func:`render_episode` wrote."""

    path: Path
    """Where the MP4 was written."""
    num_frames: int
    """Frames in the video (agent steps + 1: the initial state and the state after every step)."""
    episode_return: float
    """Undiscounted return of the rendered episode."""
    fps: float
    """Frame rate of the video."""


def render_episode(
    env_id: str,
    policy: Callable[[np.ndarray], np.ndarray],
    path: str | Path,
    *,
    key: jax.Array,
    impl: str = "jax",
    max_steps: int | None = None,
    width: int = 320,
    height: int = 240,
    camera: str | int | None = None,
    fps: float | None = None,
) -> VideoResult:
    """Run one episode of ``policy`` on ``env_id`` and write it to ``path`` as an H.264 MP4.

    ``policy`` maps raw actor observations (1, obs_size) to actions (1, action_size) (a
    :class:`reppo.policy.Policy` fits). ``key`` seeds the env reset. ``camera`` is a camera name or index of
    the model (default: its ``track`` camera if it has one, as the locomotion robots do, else MuJoCo's free
    camera). ``fps`` defaults to real time: one frame per agent step of
    ``env.dt * action_repeat`` seconds. Width and height must be even.
    """
    if width % 2 or height % 2:
        raise ValueError(f"H.264 needs an even width and height, got {width}x{height}")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if ":" in env_id:  # another family (reppo.envs.families): its own renderer
        from reppo.envs.render import render_family_episode

        frames, ret, env_fps = render_family_episode(env_id, policy, key=key, max_steps=max_steps, width=width,
                                                     height=height, camera=camera)  # fmt: skip
        fps = env_fps if fps is None else float(fps)
        return VideoResult(path=write_video(frames, path, fps), num_frames=len(frames), episode_return=ret, fps=fps)
    frames, ret = render_frames(
        env_id, policy, key=key, impl=impl, max_steps=max_steps, width=width, height=height, camera=camera
    )
    fps = _runner(env_id, impl).fps if fps is None else float(fps)
    out = write_video(frames, path, fps)
    return VideoResult(path=out, num_frames=len(frames), episode_return=ret, fps=fps)
