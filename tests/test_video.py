"""Headless MP4 rendering of a policy episode (reppo.video) on CartpoleBalance."""

from __future__ import annotations

import imageio.v2 as imageio
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reppo import video
from reppo.envs import make_env
from reppo.nets import Actor
from reppo.policy import Policy

# Starting ffmpeg (fork + exec) makes JAX warn about os.fork; harmless here.
pytestmark = pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning")

ENV = "CartpoleBalance"
STEPS, W, H = 30, 160, 120


@pytest.fixture(scope="module")
def policy() -> Policy:
    env = make_env(ENV, 1, randomize_steps=False)
    actor = Actor(action_size=env.action_size, width=32, depth=2, min_std=0.1)
    params = actor.init(jax.random.PRNGKey(0), jnp.zeros((1, env.obs_size)))
    ones = np.ones(env.obs_size, np.float32)
    return Policy(actor, params, 0 * ones, ones, ENV)


def changed_pixels(a: np.ndarray, b: np.ndarray) -> int:
    return int((np.abs(a.astype(int) - b.astype(int)).max(-1) > 30).sum())


def test_render_episode_writes_playable_mp4(policy, tmp_path):
    path = tmp_path / "sub" / "cartpole.mp4"
    res = video.render_episode(ENV, policy, path, key=jax.random.PRNGKey(1), max_steps=STEPS, width=W, height=H)
    assert res.path == path and path.is_file() and path.stat().st_size > 0
    assert res.num_frames == STEPS + 1  # initial state + one per step
    assert res.fps == pytest.approx(100.0)  # ctrl_dt 0.01 s, action_repeat 1
    assert np.isfinite(res.episode_return) and 0 < res.episode_return <= STEPS
    assert [p.name for p in path.parent.iterdir()] == ["cartpole.mp4"]  # no temp file left

    reader = imageio.get_reader(path, format="FFMPEG")
    meta = reader.get_meta_data()
    frames = np.stack(list(reader.iter_data()))
    reader.close()
    assert meta["codec"] == "h264" and meta["fps"] == pytest.approx(100.0)
    assert frames.shape == (STEPS + 1, H, W, 3) and frames.dtype == np.uint8
    assert frames[0].std() > 10  # not blank
    assert changed_pixels(frames[0], frames[-1]) > 10  # the cart / pole moved


def test_render_frames_matches_rollout(policy):
    frames, ret = video.render_frames(ENV, policy, key=jax.random.PRNGKey(2), max_steps=5, width=W, height=H)
    assert frames.shape == (6, H, W, 3) and frames.dtype == np.uint8
    assert frames.std(axis=(1, 2, 3)).min() > 10
    assert 0 < ret <= 5
    fixed, _ = video.render_frames(
        ENV, policy, key=jax.random.PRNGKey(2), max_steps=5, width=W, height=H, camera="fixed"
    )
    assert changed_pixels(frames[0], fixed[0]) > 100  # another viewpoint


def test_different_states_give_different_frames():
    runner = video._runner(ENV, "jax")  # cached: loaded and compiled by the tests above
    state = runner.reset(jax.random.PRNGKey(0))[0]  # a full Playground State
    moved = state.replace(data=state.data.replace(qpos=state.data.qpos.at[0].add(0.5).at[1].add(1.0)))
    frames = video.render_states(runner.env, [state, moved, state], width=W, height=H)
    assert frames.shape == (3, H, W, 3)
    assert changed_pixels(frames[0], frames[1]) > 100
    np.testing.assert_array_equal(frames[0], frames[2])


def test_render_states_rejects_unknown_camera():
    runner = video._runner(ENV, "jax")
    snap = runner.reset(jax.random.PRNGKey(0))[2]  # a RenderState snapshot
    with pytest.raises(ValueError, match="unknown camera 'nope'.*fixed"):
        video.render_states(runner.env, [snap], camera="nope")


def test_write_video_validates_and_is_atomic(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (4, 32, 48, 3), dtype=np.uint8)
    out = video.write_video(frames, tmp_path / "a.mp4", fps=10)
    assert len(imageio.mimread(out, format="FFMPEG")) == 4
    with pytest.raises(ValueError, match="even"):
        video.write_video(frames[:, :31], tmp_path / "b.mp4", fps=10)
    with pytest.raises(ValueError, match="fps"):
        video.write_video(frames, tmp_path / "b.mp4", fps=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def test_default_gl_backend_falls_back_to_osmesa(monkeypatch):
    monkeypatch.setattr(video.sys, "platform", "linux")
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.setattr(video, "_loadable", lambda *names: True)
    assert video.default_gl_backend() == "egl"
    monkeypatch.setattr(video, "_loadable", lambda *names: "libOSMesa" in names[0])
    assert video.default_gl_backend() == "osmesa"
    monkeypatch.setattr(video, "_loadable", lambda *names: False)
    assert video.default_gl_backend() == "egl"  # nothing found: fail later with the EGL hint
    monkeypatch.setenv("PYOPENGL_PLATFORM", "osmesa")
    assert video.default_gl_backend() == "osmesa"


def test_gl_failure_is_one_line_runtime_error():
    err = video._gl_error("egl", ImportError("libEGL.so.1: cannot open shared object file\nmore"))
    assert isinstance(err, RuntimeError) and "\n" not in str(err)
    assert "MUJOCO_GL=egl" in str(err) and "libegl1" in str(err) and "libosmesa6" in str(err)
