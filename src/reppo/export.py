"""Export a trained :class:`~reppo.policy.Policy` to a self-contained file that runs without reppo or JAX.

The ONNX graph is built by hand from the flax parameters and computes exactly what ``Policy`` does:
``clip((obs - mean) / sqrt(max(var, 1e-4)), -10, 10)`` with the frozen statistics baked in
(``reppo.normalization.normalize``), the actor's ``depth`` blocks
``Dense -> LayerNorm -> SiLU`` (nets.Block), the mean and log-std heads with ``std = exp(min(log_std,
log_std_max)) + min_std`` (nets.Actor), and the deterministic action ``clip(tanh(mean), -1 + 1e-5, 1 - 1e-5)``
(Policy.__call__ with deterministic=True). ``onnx`` is imported only when an export runs
(``pip install "reppo[export]"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reppo.files import write_atomic

if TYPE_CHECKING:
    from reppo.policy import Policy

EXPORT_FORMATS = ("onnx",)
"""Formats ``export_policy`` can write."""

MIN_OPSET = 17
"""First ONNX opset with LayerNormalization."""

# flax.linen.LayerNorm's default epsilon (nets.Block uses nn.LayerNorm() with defaults: scale and bias on).
LAYER_NORM_EPS = 1e-6

INSTALL_HINT = 'pip install "reppo[export]"'


def export_policy(policy: Policy, path: str | Path, format: str = "onnx") -> Path:
    """Write ``policy`` to ``path`` in ``format`` (one of ``EXPORT_FORMATS``); returns the path written."""
    if format == "onnx":
        return export_onnx(policy, path)
    raise ValueError(f"format={format!r} is not supported; allowed: {', '.join(EXPORT_FORMATS)}")


def export_onnx(policy: Policy, path: str | Path, opset: int = 17) -> Path:
    """Write ``policy`` as an ONNX model to ``path`` (atomically) and return the path.

    Input ``obs``: float32 ``(batch, obs_size)`` raw observations. Outputs, each float32 ``(batch, action_size)``:
    ``action`` (deterministic, ``clip(tanh(mean), -1 + 1e-5, 1 - 1e-5)``), and ``mean`` and ``std`` of the
    pre-tanh Gaussian (a stochastic action is ``tanh(mean + std * normal)``, clipped the same way).
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

    Raises ValueError if the tree is not exactly the one nets.Actor creates, so an architecture change cannot be
    exported silently wrong.
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

    walk(tree, "")
    expected = {
        f"Block_{i}/{layer}/{leaf}"
        for i in range(policy.actor.depth)
        for layer, leaves in (("Dense_0", ("kernel", "bias")), ("LayerNorm_0", ("scale", "bias")))
        for leaf in leaves
    }
    expected |= {f"Dense_{i}/{leaf}" for i in (0, 1) for leaf in ("kernel", "bias")}
    if set(found) != expected:
        missing, extra = sorted(expected - set(found)), sorted(set(found) - expected)
        raise ValueError(
            f"actor params do not match nets.Actor (depth={policy.actor.depth}): missing {missing}, unexpected {extra}"
        )
    return found


def _check_shape(weights: dict[str, np.ndarray], dense: str, n_in: int, n_out: int) -> None:
    kernel, bias = weights[f"{dense}/kernel"], weights[f"{dense}/bias"]
    if kernel.shape != (n_in, n_out) or bias.shape != (n_out,):
        raise ValueError(
            f"actor param {dense} has kernel {kernel.shape} and bias {bias.shape}; expected ({n_in}, {n_out}) "
            f"and ({n_out},) (does obs_size match the actor?)"
        )


def _build_model(onnx, policy: Policy, opset: int):
    """The ONNX ModelProto of ``policy`` (see the module docstring for the graph)."""
    from reppo import __version__
    from reppo.algo.distributions import ACTION_EPS
    from reppo.normalization import CLIP, VAR_FLOOR

    helper, TensorProto = onnx.helper, onnx.TensorProto
    actor = policy.actor
    obs_size, action_size = policy.obs_size, policy.action_size
    weights = _actor_weights(policy)
    obs_mean, obs_var = np.asarray(policy.obs_mean, np.float32), np.asarray(policy.obs_var, np.float32)
    if obs_mean.shape != (obs_size,) or obs_var.shape != (obs_size,):
        raise ValueError(f"obs_mean {obs_mean.shape} and obs_var {obs_var.shape} must both be ({obs_size},)")

    # Shapes: obs_size -> width (each block) -> action_size (both heads).
    in_size = obs_size
    for i in range(actor.depth):
        _check_shape(weights, f"Block_{i}/Dense_0", in_size, actor.width)
        in_size = actor.width
    for head in ("Dense_0", "Dense_1"):
        _check_shape(weights, head, in_size, action_size)

    initializers = []
    nodes = []

    def const(name: str, value: Any) -> str:
        initializers.append(onnx.numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def dense(x: str, prefix: str, out: str) -> str:
        """flax nn.Dense: x @ kernel + bias."""
        matmul = node("MatMul", [x, const(f"{prefix}/kernel", weights[f"{prefix}/kernel"])], f"{out}/matmul")
        return node("Add", [matmul, const(f"{prefix}/bias", weights[f"{prefix}/bias"])], out)

    # Policy.distribution: clip((obs - mean) / sqrt(max(var, floor)), -clip, clip), in float32 as JAX does.
    obs_scale = np.sqrt(np.maximum(obs_var, np.float32(VAR_FLOOR)))
    centred = node("Sub", ["obs", const("obs_mean", obs_mean)], "obs_centred")
    scaled = node("Div", [centred, const("obs_scale", obs_scale)], "obs_scaled")
    h = node("Clip", [scaled, const("obs_clip_min", -CLIP), const("obs_clip_max", CLIP)], "obs_normalized")

    # nets.Block: silu(LayerNorm(Dense(h))), silu(x) = x * sigmoid(x).
    for i in range(actor.depth):
        block = f"Block_{i}"
        x = dense(h, f"{block}/Dense_0", f"{block}/dense")
        ln = f"{block}/LayerNorm_0"
        x = node(
            "LayerNormalization",
            [x, const(f"{ln}/scale", weights[f"{ln}/scale"]), const(f"{ln}/bias", weights[f"{ln}/bias"])],
            f"{block}/layer_norm",
            axis=-1,
            epsilon=LAYER_NORM_EPS,
        )
        h = node("Mul", [x, node("Sigmoid", [x], f"{block}/sigmoid")], f"{block}/silu")

    # nets.Actor heads: mean = Dense_0(h); std = exp(min(Dense_1(h), log_std_max)) + min_std.
    mean = dense(h, "Dense_0", "mean")
    log_std = dense(h, "Dense_1", "log_std")
    log_std = node("Min", [log_std, const("log_std_max", actor.log_std_max)], "log_std_clipped")
    node("Add", [node("Exp", [log_std], "log_std_exp"), const("min_std", actor.min_std)], "std")

    # Policy.__call__(deterministic=True): clip(tanh(mean), -1 + eps, 1 - eps).
    low, high = const("action_low", -1.0 + ACTION_EPS), const("action_high", 1.0 - ACTION_EPS)
    node("Clip", [node("Tanh", [mean], "mean_tanh"), low, high], "action")

    env = policy.env or "unknown"
    doc = (
        f"REPPO policy for {env} (reppo {__version__}). Input obs: float32 (batch, {obs_size}) raw observations "
        f"(normalisation included). Outputs, float32 (batch, {action_size}): action = clip(tanh(mean), "
        f"-1+{ACTION_EPS:g}, 1-{ACTION_EPS:g}) (deterministic); mean, std of the pre-tanh Gaussian "
        "(stochastic action: clip(tanh(mean + std * N(0, 1))))."
    )
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", action_size])
        for name in ("action", "mean", "std")
    ]
    graph = helper.make_graph(
        nodes,
        "reppo_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", obs_size])],
        outputs,
        initializer=initializers,
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
    metadata = {
        "env": policy.env,
        "obs_size": str(obs_size),
        "action_size": str(action_size),
        "reppo_version": __version__,
        "width": str(actor.width),
        "depth": str(actor.depth),
        "min_std": repr(float(actor.min_std)),
        "log_std_max": repr(float(actor.log_std_max)),
    }
    helper.set_model_props(model, metadata)
    return model
