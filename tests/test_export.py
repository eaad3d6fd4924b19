"""ONNX export of a Policy (reppo.export): the graph matches the JAX policy and runs without reppo or JAX."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reppo
from reppo.algo.distributions import ACTION_EPS
from reppo.envs.spaces import Image
from reppo.export import EXPORT_FORMATS, export_onnx, export_policy
from reppo.nets import Actor, DiscreteActor
from reppo.policy import Policy

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

B = 64


def assert_close(actual, desired, scale: float):
    """float32 agreement: 1e-5 relative, and 1e-5 absolute times ``scale``, the magnitude of the head outputs
    (their sums of terms that cancel carry rounding errors of about eps * sum |term|, not eps * |result|)."""
    np.testing.assert_allclose(actual, np.asarray(desired), rtol=1e-5, atol=1e-5 * scale)


# (obs_size, action_size, width, depth, Actor keyword arguments): depth 0 (heads only), the config default
# min_std, non-default min_std / init_std / log_std_max, and a one-dimensional observation and action.
CONFIGS = [
    (1, 1, 3, 1, dict(min_std=0.1)),
    (17, 6, 32, 2, dict(min_std=1e-3)),
    (45, 12, 64, 3, dict(min_std=0.3, init_std=0.8, log_std_max=0.5)),
    (7, 2, 16, 0, dict(min_std=0.02)),
]
# Two more drawn at random (fixed seeds, so failures reproduce).
for _seed in (11, 12):
    _rng = np.random.default_rng(_seed)
    CONFIGS.append(
        (
            int(_rng.integers(1, 40)),
            int(_rng.integers(1, 10)),
            int(_rng.integers(2, 48)),
            int(_rng.integers(1, 4)),
            dict(min_std=float(_rng.uniform(1e-3, 0.5)), log_std_max=float(_rng.uniform(0.0, 2.0))),
        )
    )


@functools.cache
def make_policy(index: int) -> Policy:
    """Actor of CONFIGS[index] with noisy params (LayerNorm scale/bias away from 1/0, head outputs spread enough
    that tanh and the log-std clip saturate) and random observation statistics, one variance exactly 0."""
    obs_size, action_size, width, depth, kwargs = CONFIGS[index]
    actor = Actor(action_size, width, depth, **kwargs)
    params = actor.init(jax.random.key(index), jnp.zeros((1, obs_size)))
    rng = np.random.default_rng(100 + index)

    def perturb(path, leaf):
        # The two heads sit at the top level; give their outputs a spread of about 4.
        if path[1].key.startswith("Dense"):
            scale = 4.0 / np.sqrt(leaf.shape[0]) if leaf.ndim == 2 else 1.0
        else:
            scale = 0.5
        leaf = leaf + jnp.asarray(rng.normal(0.0, scale, leaf.shape), jnp.float32)
        if path[1].key == "Dense_1" and path[2].key == "bias":
            leaf = leaf + actor.log_std_max + 2.0  # so that some log-stds exceed log_std_max and are clipped
        return leaf

    params = jax.tree_util.tree_map_with_path(perturb, params)
    obs_mean = rng.normal(0.0, 2.0, obs_size).astype(np.float32)
    obs_var = np.exp(rng.normal(0.0, 1.5, obs_size)).astype(np.float32)
    if obs_size > 1:
        obs_var[0] = 0.0  # a constant observation dimension
    return Policy(actor=actor, params=params, obs_mean=obs_mean, obs_var=obs_var, env=f"TestEnv{index}")


@functools.cache
def exported(index: int, tmp_dir: str) -> str:
    return str(export_onnx(make_policy(index), f"{tmp_dir}/policy_{index}.onnx"))


def run_onnx(path, obs: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = ["action", "mean", "std"]
    return dict(zip(names, session.run(names, {"obs": obs}), strict=True))


def observations(policy: Policy, seed: int, spread: float) -> np.ndarray:
    """A batch of raw observations about ``spread`` standard deviations from the mean; a dimension with variance 0
    is constant (at its mean), as it is where the statistics come from."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, spread, (B, policy.obs_size))
    return (policy.obs_mean + z * np.sqrt(policy.obs_var)).astype(np.float32)


def assert_matches_jax(policy: Policy, path, obs: np.ndarray) -> dict[str, np.ndarray]:
    out = run_onnx(path, obs)
    mean, std = (np.asarray(x) for x in policy.distribution(obs))
    for name in ("action", "mean", "std"):
        assert out[name].dtype == np.float32 and out[name].shape == (B, policy.action_size), name
    # tanh is 1-Lipschitz and std's relative error is log_std's absolute one: the mean head's scale bounds all.
    scale = max(1.0, float(np.abs(mean).max()))
    assert_close(out["mean"], mean, scale)
    assert_close(out["std"], std, scale)
    assert_close(out["action"], policy(obs), scale)
    return out


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("export"))


@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_onnx_matches_policy(index, tmp_dir):
    policy = make_policy(index)
    path = exported(index, tmp_dir)
    assert_matches_jax(policy, path, observations(policy, seed=index, spread=1.0))


@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_onnx_matches_policy_on_large_inputs(index, tmp_dir):
    """Inputs hundreds of standard deviations out: tanh saturates (the action clip is active) and so does the
    log-std clip."""
    policy = make_policy(index)
    out = assert_matches_jax(policy, exported(index, tmp_dir), observations(policy, seed=1000 + index, spread=300.0))
    assert np.any(np.abs(out["action"]) == np.float32(1.0 - ACTION_EPS))
    std_max = np.exp(np.float32(policy.actor.log_std_max)) + np.float32(policy.actor.min_std)
    assert np.any(np.abs(out["std"] - std_max) <= 1e-6 * std_max)
    assert np.all(np.abs(out["action"]) <= np.float32(1.0 - ACTION_EPS))


def test_newer_opset_matches_policy(tmp_path):
    policy = make_policy(1)
    path = export_onnx(policy, tmp_path / "policy.onnx", opset=20)
    assert onnx.load(str(path)).opset_import[0].version == 20
    assert_matches_jax(policy, path, observations(policy, seed=5, spread=1.0))


def test_metadata_and_signature(tmp_dir):
    policy = make_policy(2)
    model = onnx.load(exported(2, tmp_dir))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["env"] == "TestEnv2"
    assert meta["obs_size"] == str(policy.obs_size) and meta["action_size"] == str(policy.action_size)
    assert meta["reppo_version"] == reppo.__version__
    assert "TestEnv2" in model.doc_string and model.producer_name == "reppo"

    def dims(value_info):
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    assert [(v.name, dims(v)) for v in model.graph.input] == [("obs", ["batch", policy.obs_size])]
    assert [(v.name, dims(v)) for v in model.graph.output] == [
        (name, ["batch", policy.action_size]) for name in ("action", "mean", "std")
    ]
    session = ort.InferenceSession(exported(2, tmp_dir), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map["env"] == "TestEnv2"


def test_export_policy_dispatch_and_bad_format(tmp_path):
    assert EXPORT_FORMATS == ("onnx",)
    policy = make_policy(0)
    path = export_policy(policy, tmp_path / "a.onnx")
    assert path == tmp_path / "a.onnx" and onnx.load(str(path)).graph.output[0].name == "action"
    with pytest.raises(ValueError) as info:
        export_policy(policy, tmp_path / "b.tflite", format="tflite")
    assert str(info.value) == "format='tflite' is not supported; allowed: onnx"
    assert not (tmp_path / "b.tflite").exists()


@pytest.mark.parametrize("opset", [16, 10_000, "17", True])
def test_bad_opset(opset, tmp_path):
    with pytest.raises(ValueError, match="opset=.* is not supported; allowed: 17..") as info:
        export_onnx(make_policy(0), tmp_path / "p.onnx", opset=opset)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_params_that_do_not_fit_the_actor(tmp_path):
    policy = make_policy(1)
    wrong_obs = Policy(policy.actor, policy.params, policy.obs_mean[:-1], policy.obs_var[:-1])
    with pytest.raises(ValueError, match="expected"):
        export_onnx(wrong_obs, tmp_path / "p.onnx")
    deeper = Policy(policy.actor.clone(depth=3), policy.params, policy.obs_mean, policy.obs_var)
    with pytest.raises(ValueError, match="missing .*Block_2"):
        export_onnx(deeper, tmp_path / "p.onnx")
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic(tmp_path, monkeypatch):
    policy = make_policy(0)
    path = tmp_path / "new_dir" / "policy.onnx"
    export_onnx(policy, path)
    before = path.read_bytes()
    assert [p.name for p in path.parent.iterdir()] == ["policy.onnx"]

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("reppo.files.os.replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        export_onnx(make_policy(1), path)
    assert path.read_bytes() == before  # the old file is untouched and no temporary file is left
    assert [p.name for p in path.parent.iterdir()] == ["policy.onnx"]


def test_missing_onnx_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r'pip install "reppo\[export\]"'):
        export_onnx(make_policy(0), tmp_path / "p.onnx")


def test_exported_model_runs_without_jax_or_reppo(tmp_dir, tmp_path):
    """The file needs only onnxruntime and numpy: run it in a Python where jax, flax and reppo cannot be imported."""
    index = 2
    policy = make_policy(index)
    obs = observations(policy, seed=7, spread=2.0)
    np.save(tmp_path / "obs.npy", obs)
    script = textwrap.dedent(
        """
        import sys
        BLOCKED = ("jax", "jaxlib", "flax", "reppo")
        for name in BLOCKED:
            sys.modules[name] = None  # any import of these now raises ImportError
        import numpy as np
        import onnxruntime as ort

        model, obs_file, out_file = sys.argv[1:]
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        action, mean, std = session.run(["action", "mean", "std"], {"obs": np.load(obs_file)})
        np.savez(out_file, action=action, mean=mean, std=std)
        assert all(sys.modules[name] is None for name in BLOCKED)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, exported(index, tmp_dir), str(tmp_path / "obs.npy"), str(tmp_path / "out.npz")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = np.load(tmp_path / "out.npz")
    mean, std = policy.distribution(obs)
    # tanh is 1-Lipschitz and std's relative error is log_std's absolute one: the mean head's scale bounds all.
    scale = max(1.0, float(np.abs(mean).max()))
    assert_close(out["mean"], mean, scale)
    assert_close(out["std"], std, scale)
    assert_close(out["action"], policy(obs), scale)


def test_import_does_not_need_onnx():
    script = "import sys; sys.modules['onnx'] = None; import reppo.export; print(reppo.export.EXPORT_FORMATS)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('onnx',)"


@pytest.mark.parametrize(("obs_size", "num_actions", "width", "depth"), [(4, 2, 16, 2), (400, 5, 32, 3), (6, 3, 8, 0)])
def test_discrete_onnx_matches_policy(obs_size, num_actions, width, depth, tmp_path):
    """A DiscreteActor exports to its logits and their argmax (int64): equal to the policy's on fresh random
    observations (rows whose two best logits are within rounding of each other excepted), with the metadata."""
    actor = DiscreteActor(num_actions, width, depth)
    rng = np.random.default_rng()
    params = actor.init(jax.random.key(int(rng.integers(1 << 30))), jnp.zeros((1, obs_size)))
    params = jax.tree.map(lambda x: x + jnp.asarray(rng.normal(0.0, 0.5, x.shape), jnp.float32), params)
    obs_var = np.exp(rng.normal(0.0, 1.0, obs_size)).astype(np.float32)
    policy = Policy(actor, params, rng.normal(0.0, 1.0, obs_size).astype(np.float32), obs_var, env="gymnax:Test")
    path = export_onnx(policy, tmp_path / "d.onnx")
    obs = rng.normal(0.0, 3.0, (B, obs_size)).astype(np.float32)
    action, logits = ort.InferenceSession(str(path)).run(["action", "logits"], {"obs": obs})
    expected = np.asarray(policy.distribution(obs))
    assert logits.shape == (B, num_actions) and action.shape == (B,) and action.dtype == np.int64
    assert_close(logits, expected, float(np.abs(expected).max()))
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-4
    np.testing.assert_array_equal(action[clear], policy(obs)[clear])
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert (props["num_actions"], props["action_size"], props["obs_size"]) == (str(num_actions), "1", str(obs_size))


# A MinAtar-like image (channels-last, the one-conv CNN) and a small channels-first one that takes the three-conv
# (Atari) path: 36 x 36 -> 8 x 8 -> 3 x 3 -> 1 x 1.
IMAGES = [Image(10, 10, 4), Image(36, 36, 2, channels_first=True)]
IMAGE_IDS = ["minatar_hwc", "large_chw"]


def image_policy(actor: Actor | DiscreteActor, rng: np.random.Generator) -> Policy:
    """``actor`` with fresh noisy params and random observation statistics."""
    img = actor.image
    obs_size = img.height * img.width * img.channels
    params = actor.init(jax.random.key(int(rng.integers(1 << 30))), jnp.zeros((1, obs_size)))
    params = jax.tree.map(lambda x: x + jnp.asarray(rng.normal(0.0, 0.5, x.shape), jnp.float32), params)
    obs_mean = rng.normal(0.0, 1.0, obs_size).astype(np.float32)
    obs_var = np.exp(rng.normal(0.0, 1.0, obs_size)).astype(np.float32)
    return Policy(actor, params, obs_mean, obs_var, env="minatar:Test")


def image_observations(policy: Policy, rng: np.random.Generator) -> np.ndarray:
    z = rng.normal(0.0, 2.0, (B, policy.obs_size))
    return (policy.obs_mean + z * np.sqrt(policy.obs_var)).astype(np.float32)


def assert_image_metadata(policy: Policy, path) -> None:
    model = onnx.load(str(path))
    img = policy.actor.image
    props = {p.key: p.value for p in model.metadata_props}
    assert props["obs_image"] == f"{img.height}x{img.width}x{img.channels}"
    assert props["obs_image_layout"] == ("CHW" if img.channels_first else "HWC")
    assert sum(node.op_type == "Conv" for node in model.graph.node) == (1 if img.height < 36 else 3)


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_discrete_image_onnx_matches_policy(image, tmp_path):
    """A DiscreteActor with a ConvEncoder exports its CNN: logits and argmax equal the policy's on fresh random
    params and observations (rows whose two best logits are within rounding of each other excepted)."""
    rng = np.random.default_rng()
    policy = image_policy(DiscreteActor(5, 32, 2, image=image), rng)
    path = export_onnx(policy, tmp_path / "d.onnx")
    obs = image_observations(policy, rng)
    action, logits = ort.InferenceSession(str(path)).run(["action", "logits"], {"obs": obs})
    expected = np.asarray(policy.distribution(obs))
    assert logits.shape == (B, 5) and action.shape == (B,) and action.dtype == np.int64
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-4
    np.testing.assert_array_equal(action[clear], policy(obs)[clear])
    assert_image_metadata(policy, path)


@pytest.mark.parametrize("image", IMAGES, ids=IMAGE_IDS)
def test_image_onnx_matches_policy(image, tmp_path):
    """An Actor with a ConvEncoder: mean, std and the deterministic action equal the policy's."""
    rng = np.random.default_rng()
    policy = image_policy(Actor(3, 32, 1, min_std=0.05, image=image), rng)
    path = export_onnx(policy, tmp_path / "c.onnx")
    obs = image_observations(policy, rng)
    out = run_onnx(path, obs)
    mean, std = (np.asarray(x) for x in policy.distribution(obs))
    for name, expected in (("mean", mean), ("std", std), ("action", policy(obs))):
        assert out[name].dtype == np.float32 and out[name].shape == (B, 3), name
        np.testing.assert_allclose(out[name], expected, rtol=1e-4, atol=1e-5, err_msg=name)
    assert_image_metadata(policy, path)


def test_image_params_that_do_not_fit_the_actor(tmp_path):
    """The conv subtree is part of the strict check: a missing conv leaf, or a conv layer the image's CNN does not
    have, is rejected by name."""
    rng = np.random.default_rng()
    policy = image_policy(DiscreteActor(3, 8, 1, image=IMAGES[0]), rng)
    params = jax.tree.map(lambda x: x, policy.params)  # a copy to edit
    del params["params"]["ConvEncoder_0"]["Conv_0"]["bias"]
    with pytest.raises(ValueError, match=r"missing \['ConvEncoder_0/Conv_0/bias'\], unexpected \[\]"):
        export_onnx(Policy(policy.actor, params, policy.obs_mean, policy.obs_var), tmp_path / "p.onnx")
    params = jax.tree.map(lambda x: x, policy.params)
    params["params"]["ConvEncoder_0"]["Conv_1"] = params["params"]["ConvEncoder_0"]["Conv_0"]
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['ConvEncoder_0/Conv_1/bias'"):
        export_onnx(Policy(policy.actor, params, policy.obs_mean, policy.obs_var), tmp_path / "p.onnx")
    without_image = Policy(policy.actor.clone(image=None), policy.params, policy.obs_mean, policy.obs_var)
    with pytest.raises(ValueError, match="unexpected .*ConvEncoder_0/Conv_0/kernel"):
        export_onnx(without_image, tmp_path / "p.onnx")
    assert list(tmp_path.iterdir()) == []
