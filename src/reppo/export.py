"""Export a trained :class:`~reppo.policy.Policy` to a self-contained file that runs without reppo or JAX.

The ONNX graph is built by hand from the flax parameters and computes exactly what ``Policy`` does:
``clip((obs - mean) / sqrt(max(var, 1e-4)), -10, 10)`` with the frozen statistics baked in
(``reppo.normalization.normalize``), the actor's ``depth`` blocks
``Dense -> LayerNorm -> SiLU`` (nets.Block), the mean and log-std heads with ``std = exp(min(log_std,
log_std_max)) + min_std`` (nets.Actor), and the deterministic action ``clip(tanh(mean), -1 + 1e-5, 1 - 1e-5)``
(Policy.__call__ with deterministic=True). A discrete policy (nets.DiscreteActor) has one head, the logits of
pi(.|x), and the deterministic action argmax (int64). An actor with an image observation (``image`` set) first
gets its CNN (nets.ConvEncoder): the normalised observation reshaped to the env's layout, each ``Conv -> LayerNorm
over the channels -> ReLU``, the maps flattened in (H, W, C) order and one block. ``onnx`` is imported only when
an export runs (``pip install "reppo[export]"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reppo.files import write_atomic

if TYPE_CHECKING:
    from reppo.envs.spaces import Image
    from reppo.policy import Policy

EXPORT_FORMATS = ("onnx",)
"""Formats ``export_policy`` can write."""

MIN_OPSET = 17
"""First ONNX opset with LayerNormalization."""

# flax.linen.LayerNorm's default epsilon (nets.Block uses nn.LayerNorm() with defaults: scale and bias on).
LAYER_NORM_EPS = 1e-6

INSTALL_HINT = 'pip install "reppo[export]"'

CONV_ENCODER = "ConvEncoder_0"
"""The params subtree of an image actor's nets.ConvEncoder."""

NHWC_TO_NCHW, NCHW_TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def export_policy(policy: Policy, path: str | Path, format: str = "onnx") -> Path:
    """Write ``policy`` to ``path`` in ``format`` (one of ``EXPORT_FORMATS``); returns the path written."""
    if format == "onnx":
        return export_onnx(policy, path)
    raise ValueError(f"format={format!r} is not supported; allowed: {', '.join(EXPORT_FORMATS)}")


def export_onnx(policy: Policy, path: str | Path, opset: int = 17) -> Path:
    """Write ``policy`` as an ONNX model to ``path`` (atomically) and return the path.

    Input ``obs``: float32 ``(batch, obs_size)`` raw observations; an image actor's are its images flattened in the
    env's layout (H x W x C, or C x H x W when channels-first), and the graph includes its CNN. Outputs, each
    float32 ``(batch, action_size)``: ``action`` (deterministic, ``clip(tanh(mean), -1 + 1e-5, 1 - 1e-5)``), and
    ``mean`` and ``std`` of the pre-tanh Gaussian (a stochastic action is ``tanh(mean + std * normal)``, clipped the
    same way). A discrete policy: ``action`` int64 ``(batch,)``, the argmax of ``logits`` float32
    ``(batch, num_actions)``.
    """
    onnx = _import_onnx()
    max_opset = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= max_opset:
        raise ValueError(f"opset={opset!r} is not supported; allowed: {MIN_OPSET}..{max_opset}")
    model = _build_model(onnx, policy, opset)
    onnx.checker.check_model(model, full_check=True)
    return write_atomic(path, model.SerializeToString())


def _import_onnx():
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError as e:
        raise ImportError(f"exporting a policy to ONNX needs the onnx package: {INSTALL_HINT}") from e
    return onnx


def _actor_weights(policy: Policy) -> dict[str, np.ndarray]:
    """The actor's parameters as float32 arrays keyed by their path (``Block_0/Dense_0/kernel`` ...).

    Raises ValueError if the tree is not exactly the one nets.Actor (or nets.DiscreteActor) creates, so an
    architecture change cannot be exported silently wrong.
    """
    tree = policy.params
    if "params" in tree:
        tree = tree["params"]
    found: dict[str, np.ndarray] = {}

    def walk(node: Any, prefix: str) -> None:
        if hasattr(node, "items"):
            for key, value in node.items():
                walk(value, f"{prefix}/{key}" if prefix else str(key))
        else:
            found[prefix] = np.asarray(node, np.float32)

    from reppo.nets import conv_layers

    walk(tree, "")
    actor = policy.actor
    expected = set().union(*(_block_keys(f"Block_{i}") for i in range(actor.depth)))
    heads = (0,) if policy.num_actions else (0, 1)  # DiscreteActor: the logits; Actor: mean and log-std
    expected |= {f"Dense_{i}/{leaf}" for i in heads for leaf in ("kernel", "bias")}
    if actor.image is not None:  # nets.ConvEncoder: a Conv and a LayerNorm per layer, then one Block
        expected |= _block_keys(f"{CONV_ENCODER}/Block_0")
        expected |= {f"{CONV_ENCODER}/{layer}_{i}/{leaf}" for i in range(len(conv_layers(actor.image)))
                     for layer, leaves in (("Conv", ("kernel", "bias")), ("LayerNorm", ("scale", "bias")))
                     for leaf in leaves}  # fmt: skip
    if set(found) != expected:
        missing, extra = sorted(expected - set(found)), sorted(set(found) - expected)
        raise ValueError(f"actor params do not match nets.{type(actor).__name__} (depth={actor.depth}, "
                         f"image={actor.image}): missing {missing}, unexpected {extra}")  # fmt: skip
    return found


def _block_keys(block: str) -> set[str]:
    """The parameter paths of a nets.Block at ``block``."""
    leaves = (("Dense_0", ("kernel", "bias")), ("LayerNorm_0", ("scale", "bias")))
    return {f"{block}/{layer}/{leaf}" for layer, names in leaves for leaf in names}


def _check_conv(weights: dict[str, np.ndarray], i: int, kernel: int, c_in: int, features: int) -> None:
    """Conv_i (HWIO kernel) and LayerNorm_i of the ConvEncoder have the shapes of nets.ConvEncoder's layer i."""
    conv, ln = f"{CONV_ENCODER}/Conv_{i}", f"{CONV_ENCODER}/LayerNorm_{i}"
    expected = {f"{conv}/kernel": (kernel, kernel, c_in, features), f"{conv}/bias": (features,),
                f"{ln}/scale": (features,), f"{ln}/bias": (features,)}  # fmt: skip
    wrong = {name: weights[name].shape for name, shape in expected.items() if weights[name].shape != shape}
    if wrong:
        raise ValueError(f"actor params {wrong} do not have the shapes of nets.ConvEncoder's layer {i}: {expected}")


def _check_shape(weights: dict[str, np.ndarray], dense: str, n_in: int, n_out: int) -> None:
    kernel, bias = weights[f"{dense}/kernel"], weights[f"{dense}/bias"]
    if kernel.shape != (n_in, n_out) or bias.shape != (n_out,):
        raise ValueError(
            f"actor param {dense} has kernel {kernel.shape} and bias {bias.shape}; expected ({n_in}, {n_out}) "
            f"and ({n_out},) (does obs_size match the actor?)"
        )


class _Graph:
    """The nodes and constants of an ONNX graph under construction."""

    def __init__(self, onnx, weights: dict[str, np.ndarray]):
        self.onnx, self.weights = onnx, weights
        self.nodes: list = []
        self.initializers: list = []

    def const(self, name: str, value: Any, dtype: type = np.float32) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def dense(self, x: str, prefix: str, out: str) -> str:
        """flax nn.Dense: x @ kernel + bias."""
        matmul = self.node("MatMul", [x, self.const(f"{prefix}/kernel", self.weights[f"{prefix}/kernel"])],
                           f"{out}/matmul")  # fmt: skip
        return self.node("Add", [matmul, self.const(f"{prefix}/bias", self.weights[f"{prefix}/bias"])], out)

    def layer_norm(self, x: str, prefix: str, out: str) -> str:
        """flax nn.LayerNorm (defaults) over the last axis."""
        scale = self.const(f"{prefix}/scale", self.weights[f"{prefix}/scale"])
        bias = self.const(f"{prefix}/bias", self.weights[f"{prefix}/bias"])
        return self.node("LayerNormalization", [x, scale, bias], out, axis=-1, epsilon=LAYER_NORM_EPS)

    def block(self, x: str, block: str, n_in: int, width: int) -> str:
        """nets.Block at ``block``: silu(LayerNorm(Dense(x))), silu(x) = x * sigmoid(x)."""
        _check_shape(self.weights, f"{block}/Dense_0", n_in, width)
        x = self.layer_norm(self.dense(x, f"{block}/Dense_0", f"{block}/dense"), f"{block}/LayerNorm_0",
                            f"{block}/layer_norm")  # fmt: skip
        return self.node("Mul", [x, self.node("Sigmoid", [x], f"{block}/sigmoid")], f"{block}/silu")


def _trunk(g: _Graph, policy: Policy) -> tuple[str, int]:
    """Normalised observation, an image actor's CNN, then the actor's ``depth`` blocks; returns the features' name
    and size."""
    from reppo.normalization import CLIP, VAR_FLOOR

    obs_size = policy.obs_size
    obs_mean, obs_var = np.asarray(policy.obs_mean, np.float32), np.asarray(policy.obs_var, np.float32)
    if obs_mean.shape != (obs_size,) or obs_var.shape != (obs_size,):
        raise ValueError(f"obs_mean {obs_mean.shape} and obs_var {obs_var.shape} must both be ({obs_size},)")
    # Policy: clip((obs - mean) / sqrt(max(var, floor)), -clip, clip), in float32 as JAX does.
    obs_scale = np.sqrt(np.maximum(obs_var, np.float32(VAR_FLOOR)))
    centred = g.node("Sub", ["obs", g.const("obs_mean", obs_mean)], "obs_centred")
    scaled = g.node("Div", [centred, g.const("obs_scale", obs_scale)], "obs_scaled")
    h = g.node("Clip", [scaled, g.const("obs_clip_min", -CLIP), g.const("obs_clip_max", CLIP)], "obs_normalized")
    in_size = obs_size
    if policy.actor.image is not None:
        h, in_size = _conv_encoder(g, policy, h)
    for i in range(policy.actor.depth):
        h = g.block(h, f"Block_{i}", in_size, policy.actor.width)
        in_size = policy.actor.width
    return h, in_size


def _conv_encoder(g: _Graph, policy: Policy, h: str) -> tuple[str, int]:
    """nets.ConvEncoder on the normalised flat observation ``h``: reshaped to the env's layout and transposed to
    NCHW for ONNX Conv (kernels HWIO -> OIHW), each conv's LayerNorm over the channels in NHWC, ReLU, the last maps
    flattened in NHWC order (as flax flattens) and one Block. Returns the features' name and size."""
    from reppo.nets import conv_layers

    image, width = policy.actor.image, policy.actor.width
    if policy.obs_size != image.height * image.width * image.channels:
        raise ValueError(f"obs_size={policy.obs_size} does not fit the actor's image {_image_text(image)}")
    x = g.node("Reshape", [h, g.const("image_shape", [0, *image.stored_shape], np.int64)], "image")
    if not image.channels_first:
        x = g.node("Transpose", [x], "image_nchw", perm=NHWC_TO_NCHW)
    height, wide, channels = image.height, image.width, image.channels
    layers = conv_layers(image)
    for i, (features, kernel, stride) in enumerate(layers):
        if min(height, wide) < kernel:
            raise ValueError(f"the image {_image_text(image)} is too small for nets.ConvEncoder's layer {i}")
        _check_conv(g.weights, i, kernel, channels, features)
        height, wide, channels = (height - kernel) // stride + 1, (wide - kernel) // stride + 1, features
        conv, ln = f"{CONV_ENCODER}/Conv_{i}", f"{CONV_ENCODER}/LayerNorm_{i}"
        oihw = g.const(f"{conv}/kernel", g.weights[f"{conv}/kernel"].transpose(3, 2, 0, 1))
        x = g.node("Conv", [x, oihw, g.const(f"{conv}/bias", g.weights[f"{conv}/bias"])], f"{conv}/conv",
                   kernel_shape=[kernel, kernel], strides=[stride, stride])  # fmt: skip
        x = g.node("Transpose", [x], f"{conv}/nhwc", perm=NCHW_TO_NHWC)
        x = g.node("Relu", [g.layer_norm(x, ln, f"{ln}/layer_norm")], f"{ln}/relu")
        if i + 1 < len(layers):
            x = g.node("Transpose", [x], f"{ln}/nchw", perm=NHWC_TO_NCHW)
    x = g.node("Flatten", [x], f"{CONV_ENCODER}/flatten", axis=1)
    return g.block(x, f"{CONV_ENCODER}/Block_0", height * wide * channels, width), width


def _image_text(image: Image) -> str:
    """``HxWxC``."""
    return f"{image.height}x{image.width}x{image.channels}"


def _gaussian_heads(g: _Graph, policy: Policy, h: str, h_size: int) -> tuple[list[tuple[str, int, int]], str]:
    """nets.Actor: mean = Dense_0(h), std = exp(min(Dense_1(h), log_std_max)) + min_std, and the deterministic
    action clip(tanh(mean), -1 + eps, 1 - eps) (Policy with deterministic=True). Returns (outputs, doc)."""
    from reppo.algo.distributions import ACTION_EPS

    actor, action_size = policy.actor, policy.action_size
    for head in ("Dense_0", "Dense_1"):
        _check_shape(g.weights, head, h_size, action_size)
    mean = g.dense(h, "Dense_0", "mean")
    log_std = g.node("Min", [g.dense(h, "Dense_1", "log_std"), g.const("log_std_max", actor.log_std_max)],
                     "log_std_clipped")  # fmt: skip
    g.node("Add", [g.node("Exp", [log_std], "log_std_exp"), g.const("min_std", actor.min_std)], "std")
    low, high = g.const("action_low", -1.0 + ACTION_EPS), g.const("action_high", 1.0 - ACTION_EPS)
    g.node("Clip", [g.node("Tanh", [mean], "mean_tanh"), low, high], "action")
    doc = (
        f"Outputs, float32 (batch, {action_size}): action = clip(tanh(mean), -1+{ACTION_EPS:g}, 1-{ACTION_EPS:g}) "
        "(deterministic); mean, std of the pre-tanh Gaussian (stochastic action: clip(tanh(mean + std * N(0, 1))))."
    )
    f = g.onnx.TensorProto.FLOAT
    return [("action", f, action_size), ("mean", f, action_size), ("std", f, action_size)], doc


def _categorical_head(g: _Graph, policy: Policy, h: str, h_size: int) -> tuple[list[tuple[str, int, int]], str]:
    """nets.DiscreteActor: logits = Dense_0(h), and the deterministic action argmax_a logits (Policy with
    deterministic=True; ties go to the first action, as jnp.argmax). Returns (outputs, doc)."""
    n = policy.num_actions
    _check_shape(g.weights, "Dense_0", h_size, n)
    logits = g.dense(h, "Dense_0", "logits")
    g.node("ArgMax", [logits], "action", axis=-1, keepdims=0, select_last_index=0)
    doc = (f"Outputs: action, int64 (batch,), the most probable action (deterministic); logits, float32 (batch, {n}), "
           "of pi(a|x) = softmax(logits) (stochastic action: sample it).")  # fmt: skip
    tp = g.onnx.TensorProto
    return [("action", tp.INT64, None), ("logits", tp.FLOAT, n)], doc


def _build_model(onnx, policy: Policy, opset: int):
    """The ONNX ModelProto of ``policy`` (see the module docstring for the graph)."""
    from reppo import __version__

    helper = onnx.helper
    g = _Graph(onnx, _actor_weights(policy))
    outputs, out_doc = (_categorical_head if policy.num_actions else _gaussian_heads)(g, policy, *_trunk(g, policy))
    image = policy.actor.image
    layout = "" if image is None else (f", each a {_image_text(image)} image flattened in "
                                       f"{_image_layout(image)} order")  # fmt: skip
    doc = (f"REPPO policy for {policy.env or 'unknown'} (reppo {__version__}). Input obs: float32 (batch, "
           f"{policy.obs_size}) raw observations{layout} (normalisation included). {out_doc}")  # fmt: skip
    shape = lambda size: ["batch", size] if size else ["batch"]
    graph = helper.make_graph(
        g.nodes,
        "reppo_policy",
        [helper.make_tensor_value_info("obs", onnx.TensorProto.FLOAT, shape(policy.obs_size))],
        [helper.make_tensor_value_info(name, kind, shape(size)) for name, kind, size in outputs],
        initializer=g.initializers,
        doc_string=doc,
    )
    opset_imports = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph,
        opset_imports=opset_imports,
        producer_name="reppo",
        producer_version=__version__,
        doc_string=doc,
        # The lowest IR version that holds this opset, so older onnxruntime releases can load the file.
        ir_version=helper.find_min_ir_version_for(opset_imports),
    )
    helper.set_model_props(model, _metadata(policy, __version__))
    return model


def _metadata(policy: Policy, version: str) -> dict[str, str]:
    actor = policy.actor
    meta = {"env": policy.env, "obs_size": str(policy.obs_size), "action_size": str(policy.action_size),
            "reppo_version": version, "width": str(actor.width), "depth": str(actor.depth)}  # fmt: skip
    if actor.image is not None:
        meta |= {"obs_image": _image_text(actor.image), "obs_image_layout": _image_layout(actor.image)}
    if policy.num_actions:
        return {**meta, "num_actions": str(policy.num_actions)}
    return {**meta, "min_std": repr(float(actor.min_std)), "log_std_max": repr(float(actor.log_std_max))}


def _image_layout(image: Image) -> str:
    """The order of a flat image observation: ``CHW`` (channels-first) or ``HWC``."""
    return "CHW" if image.channels_first else "HWC"
