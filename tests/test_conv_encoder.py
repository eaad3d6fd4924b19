"""The CNN encoder for image observations (nets.ConvEncoder): its forward pass against a numpy brute-force
convolution, the image layouts (channels-last MinAtar grids, channels-first stacked frames), every network with an
image, and the one-line error for ``encoder="cnn"`` on an env without an image."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reppo.envs.spaces import Image, image_of
from reppo.nets import SMALL_IMAGE, Actor, ConvEncoder, Critic, DiscreteActor, DiscreteCritic


def ref_conv_valid(x, kernel, bias, stride):
    """x (B, H, W, Cin), kernel (kh, kw, Cin, Cout): the VALID strided cross-correlation, by explicit windows."""
    kh, kw, _, cout = kernel.shape
    out_h, out_w = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = np.empty((x.shape[0], out_h, out_w, cout))
    for i in range(out_h):
        for j in range(out_w):
            window = x[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[:, i, j, :] = np.einsum("bhwc,hwco->bo", window, kernel) + bias
    return out


def ref_layer_norm(x, scale, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + eps) * scale + bias


def ref_encoder(params, image: Image, obs):
    """float64 numpy ConvEncoder: reshape to the stored layout, channels last, convs + LayerNorm + ReLU, flatten
    (H, W, C order), Dense + LayerNorm + SiLU."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    x = np.asarray(obs, np.float64).reshape(obs.shape[0], *image.stored_shape)
    if image.channels_first:
        x = np.moveaxis(x, 1, -1)
    strides = [1] if min(image.height, image.width) < SMALL_IMAGE else [4, 2, 1]
    for i, stride in enumerate(strides):
        conv, ln = p[f"Conv_{i}"], p[f"LayerNorm_{i}"]
        x = ref_conv_valid(x, conv["kernel"], conv["bias"], stride)
        x = np.maximum(ref_layer_norm(x, ln["scale"], ln["bias"]), 0.0)
    x = x.reshape(x.shape[0], -1)
    block = p["Block_0"]
    h = ref_layer_norm(x @ block["Dense_0"]["kernel"] + block["Dense_0"]["bias"], block["LayerNorm_0"]["scale"],
                       block["LayerNorm_0"]["bias"])  # fmt: skip
    return h / (1 + np.exp(-h))


@pytest.mark.parametrize(
    "image, conv_shapes",
    [
        (Image(10, 10, 4), [(3, 3, 4, 16)]),  # MinAtar: one conv
        (Image(12, 9, 3), [(3, 3, 3, 16)]),  # not square
        (Image(36, 40, 2, channels_first=True), [(8, 8, 2, 32), (4, 4, 32, 64), (3, 3, 64, 64)]),  # Nature CNN
    ],
)
def test_encoder_matches_a_brute_force_convolution(image, conv_shapes):
    rng = np.random.default_rng()
    width = int(rng.integers(8, 24))
    encoder = ConvEncoder(image, width)
    size = image.height * image.width * image.channels
    obs = rng.normal(0, 1.5, (5, size)).astype(np.float32)
    params = encoder.init(jax.random.PRNGKey(int(rng.integers(2**31))), jnp.zeros((1, size)))
    # random biases and LayerNorm affines too, so that every parameter enters the comparison
    params = jax.tree.map(lambda a: a + rng.normal(0, 0.3, a.shape).astype(np.float32), params)
    assert [params["params"][f"Conv_{i}"]["kernel"].shape for i in range(len(conv_shapes))] == conv_shapes
    got = np.asarray(jax.jit(encoder.apply)(params, obs))
    assert got.shape == (5, width)
    np.testing.assert_allclose(got, ref_encoder(params, image, obs), rtol=2e-4, atol=2e-4)
    # any leading batch shape: (2, 5, size) gives the rows of (10, size)
    stacked = np.stack([obs, obs[::-1]])
    np.testing.assert_allclose(np.asarray(encoder.apply(params, stacked))[1], got[::-1], rtol=1e-5, atol=1e-5)


def test_channels_first_is_read_in_its_own_layout():
    """The same picture stored as (C, H, W) and as (H, W, C) gives the same features with the same params."""
    rng = np.random.default_rng()
    hwc = rng.normal(size=(3, 10, 11, 4)).astype(np.float32)
    last, first = Image(10, 11, 4), Image(10, 11, 4, channels_first=True)
    params = ConvEncoder(last, 16).init(jax.random.PRNGKey(int(rng.integers(2**31))), jnp.zeros((1, 440)))
    a = ConvEncoder(last, 16).apply(params, hwc.reshape(3, -1))
    b = ConvEncoder(first, 16).apply(params, np.moveaxis(hwc, -1, 1).reshape(3, -1))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((10, 10, 4), Image(10, 10, 4)),
        ((4, 84, 84), Image(84, 84, 4, channels_first=True)),
        ((64, 64, 3), Image(64, 64, 3)),
        ((17,), None),
        ((3, 4), None),
        (None, None),
        ((2, 0, 5), None),
        ((2, 2, 5), None),  # sides below the 3 x 3 kernel
        ((1, 3, 3), Image(3, 3, 1, channels_first=True)),
    ],
)
def test_image_of_reads_the_layout(shape, expected):
    image = image_of(shape)
    assert image == expected
    if image is not None:
        assert image.stored_shape == tuple(shape)
        assert Image.from_list(image.to_list()) == image


def test_every_network_reads_an_image():
    """Actor, Critic, DiscreteActor and DiscreteCritic with an image each own a ConvEncoder, and give the shapes of
    their MLP versions."""
    image, key, n = Image(10, 10, 3), jax.random.PRNGKey(0), 7
    obs = jnp.asarray(np.random.default_rng().normal(size=(n, 300)), jnp.float32)
    probs = tuple([0.0] * 10 + [1.0] + [0.0] * 10)
    nets = [
        (Actor(2, 16, 2, 1e-3, image=image), (obs,)),
        (Critic(16, 2, probs, image=image), (obs, jnp.zeros((n, 2)))),
        (DiscreteActor(5, 16, 2, image=image), (obs,)),
        (DiscreteCritic(5, 16, 2, probs, image=image), (obs, jnp.zeros((n,), jnp.int32))),
    ]
    for net, args in nets:
        params = net.init(key, *args)
        assert any("ConvEncoder" in k or k == "conv" for k in params["params"]), type(net).__name__
        mlp = net.clone(image=None)
        out, ref = net.apply(params, *args), mlp.apply(mlp.init(key, *args), *args)
        assert jax.tree.map(jnp.shape, out) == jax.tree.map(jnp.shape, ref)


def test_cnn_without_an_image_is_one_line(tmp_path):
    """encoder='cnn' on CartPole's 4-vector: one line naming the value and what is allowed, nothing written; an
    unknown encoder name: one line too."""
    pytest.importorskip("gymnax")
    from reppo import Config, train
    from reppo.config import ConfigError

    with pytest.raises(ConfigError, match=r"^encoder='cnn': 'gymnax:CartPole-v1' has no image observation .*allowed"):
        train(Config(env="gymnax:CartPole-v1", encoder="cnn", progress=False), run_dir=tmp_path / "bad")
    assert not (tmp_path / "bad" / "config.yaml").exists()
    with pytest.raises(ConfigError, match=r"^encoder='conv' is not allowed; allowed: one of 'auto', 'mlp', 'cnn'"):
        train(Config(env="gymnax:CartPole-v1", encoder="conv", progress=False), run_dir=tmp_path / "bad2")


def test_runs_from_before_the_encoder_field_resume_with_mlps(tmp_path):
    """A config.yaml without ``encoder`` (written before the CNN existed, when grids were flattened) loads as
    encoder="mlp", so its checkpoint's MLP parameters still fit; a saved encoder is kept."""
    import dataclasses

    import yaml

    from reppo import Config
    from reppo.config import CONFIG_FILE, load_config

    values = dataclasses.asdict(Config(env="gymnax:Breakout-MinAtar"))
    assert values.pop("encoder") == "auto"
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(values))
    assert load_config(tmp_path).encoder == "mlp"
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump({**values, "encoder": "cnn"}))
    assert load_config(tmp_path).encoder == "cnn"
