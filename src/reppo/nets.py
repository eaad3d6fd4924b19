"""Actor and critic networks (spec sections 2 and 4).

Both are stacks of normalised blocks ``Linear -> LayerNorm -> SiLU``. The critic embeds (x, a) with an encoder
phi, reads HL-Gauss logits from a Q head and, for the auxiliary self-predictive loss, predicts the reward and the
next embedding from an auxiliary head. With an image observation (``image`` set, ``--encoder cnn``) each network
first reads the flat observation back as an image through its own :class:`ConvEncoder`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from reppo.envs.spaces import Image

# Initial logits are `ZERO_VALUE_LOGIT_SCALE * p(0)`, p(0) the HL-Gauss encoding of the value 0, as a trainable
# bias: softmax of it puts nearly all mass on the bins around 0, so Q starts at about 0 instead of at the centre
# of [v_min, v_max] (the authors' constant, about 40).
ZERO_VALUE_LOGIT_SCALE = 40.0


class Block(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.silu(nn.LayerNorm()(nn.Dense(self.width)(x)))


SMALL_IMAGE = 36
"""Images with a side below this many pixels (MinAtar's 10 x 10) get the one-layer MinAtar CNN; larger ones
(Atari's 84 x 84) the three-layer Nature CNN."""


def conv_layers(image: Image) -> list[tuple[int, int, int]]:
    """The convolutions :class:`ConvEncoder` applies to ``image``: (features, kernel size, stride) each, VALID."""
    if min(image.height, image.width) < SMALL_IMAGE:
        return [(16, 3, 1)]
    return [(32, 8, 4), (64, 4, 2), (64, 3, 1)]


class ConvEncoder(nn.Module):
    """Flat image observation (..., H * W * C) -> features (..., width), every layer normalised as the rest of the
    networks are. Small images (MinAtar, Young and Tian 2019; the authors' ``MinatarConvNet``): Conv 16 3x3 VALID.
    Large ones (Atari, Mnih et al. 2015): Conv 32 8x8/4, Conv 64 4x4/2, Conv 64 3x3/1, VALID. Each conv is
    followed by a LayerNorm over the channels and a ReLU; the flattened maps then pass one ``Block(width)``."""

    image: Image
    width: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        img = self.image
        x = obs.reshape(*obs.shape[:-1], *img.stored_shape)
        if img.channels_first:
            x = jnp.moveaxis(x, -3, -1)
        for features, kernel, stride in conv_layers(img):
            x = nn.Conv(features, (kernel, kernel), (stride, stride), padding="VALID")(x)
            x = nn.relu(nn.LayerNorm()(x))
        return Block(self.width)(x.reshape(*x.shape[:-3], -1))


def _encode(image: Image | None, width: int, obs: jax.Array) -> jax.Array:
    """The observation as the first block sees it: CNN features for an image, else the flat vector."""
    return obs if image is None else ConvEncoder(image, width)(obs)


class Actor(nn.Module):
    """Tanh-Gaussian policy head: returns (mean, std) of the pre-tanh Gaussian."""

    action_size: int
    width: int
    depth: int
    min_std: float
    init_std: float = 1.0
    log_std_max: float = 2.0
    image: Image | None = None

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = _encode(self.image, self.width, obs)
        for _ in range(self.depth):
            h = Block(self.width)(h)
        small = nn.initializers.variance_scaling(0.01, "fan_in", "truncated_normal")
        mean = nn.Dense(self.action_size, kernel_init=small)(h)
        init_log_std = jnp.log(max(self.init_std - self.min_std, 1e-6))
        log_std = nn.Dense(self.action_size, kernel_init=small, bias_init=nn.initializers.constant(init_log_std))(h)
        std = jnp.exp(jnp.minimum(log_std, self.log_std_max)) + self.min_std
        return mean, std


class Critic(nn.Module):
    """HL-Gauss Q-function with an auxiliary (reward, next-embedding) prediction head."""

    width: int
    encoder_depth: int
    zero_value_probs: tuple[float, ...]
    """HL-Gauss encoding p(0) of the value 0 (K_b floats); sets the initial logit bias."""
    image: Image | None = None

    def setup(self):
        self.conv = None if self.image is None else ConvEncoder(self.image, self.width)
        self.encoder = [Block(self.width) for _ in range(self.encoder_depth)]
        self.q_block = Block(self.width)
        small = nn.initializers.variance_scaling(0.01, "fan_in", "truncated_normal")
        self.q_out = nn.Dense(
            len(self.zero_value_probs),
            kernel_init=small,
            bias_init=lambda *_: ZERO_VALUE_LOGIT_SCALE * jnp.asarray(self.zero_value_probs, jnp.float32),
        )
        self.aux_block = Block(self.width)
        self.aux_out = nn.Dense(1 + self.width)

    def embed(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        """phi(x, a)."""
        h = jnp.concatenate([obs if self.conv is None else self.conv(obs), action], axis=-1)
        for block in self.encoder:
            h = block(h)
        return h

    def logits(self, embedding: jax.Array) -> jax.Array:
        return self.q_out(self.q_block(embedding))

    def predict_aux(self, embedding: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Predicted (reward, next embedding) from phi(x_t, a_t)."""
        out = self.aux_out(self.aux_block(embedding))
        return out[..., 0], out[..., 1:]

    def q_logits(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        """HL-Gauss logits of Q(x, a), without the auxiliary head."""
        return self.logits(self.embed(obs, action))

    def __call__(self, obs: jax.Array, action: jax.Array):
        emb = self.embed(obs, action)
        return self.logits(emb), self.predict_aux(emb)


class DiscreteActor(nn.Module):
    """Categorical policy head: returns the logits l(x) of pi(.|x) = softmax(l(x)), shape (..., num_actions)."""

    num_actions: int
    width: int
    depth: int
    image: Image | None = None

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        h = _encode(self.image, self.width, obs)
        for _ in range(self.depth):
            h = Block(self.width)(h)
        # small output weights: the initial policy is close to uniform (the largest entropy)
        small = nn.initializers.variance_scaling(0.01, "fan_in", "truncated_normal")
        return nn.Dense(self.num_actions, kernel_init=small)(h)


class DiscreteCritic(nn.Module):
    """HL-Gauss Q-function over A discrete actions with a head per action: one pass gives the logits of Q(x, a)
    for every a, shape (..., A, K_b) (docs/discrete.md). The encoder phi(x) sees the state only; the auxiliary
    head predicts (reward, phi(x')) from [phi(x), one_hot(a)], so the self-predictive loss stays action-dependent.
    """

    num_actions: int
    width: int
    encoder_depth: int
    zero_value_probs: tuple[float, ...]
    """HL-Gauss encoding p(0) of the value 0 (K_b floats); sets the initial logit bias of every action's head."""
    image: Image | None = None

    def setup(self):
        self.conv = None if self.image is None else ConvEncoder(self.image, self.width)
        self.encoder = [Block(self.width) for _ in range(self.encoder_depth)]
        self.q_block = Block(self.width)
        small = nn.initializers.variance_scaling(0.01, "fan_in", "truncated_normal")
        probs = jnp.asarray(self.zero_value_probs, jnp.float32)
        self.q_out = nn.Dense(
            self.num_actions * len(self.zero_value_probs),
            kernel_init=small,
            bias_init=lambda *_: ZERO_VALUE_LOGIT_SCALE * jnp.tile(probs, self.num_actions),
        )
        self.aux_block = Block(self.width)
        self.aux_out = nn.Dense(1 + self.width)

    def embed(self, obs: jax.Array) -> jax.Array:
        """phi(x)."""
        h = obs if self.conv is None else self.conv(obs)
        for block in self.encoder:
            h = block(h)
        return h

    def logits(self, embedding: jax.Array) -> jax.Array:
        """HL-Gauss logits of Q(x, a) for every action, (..., width) -> (..., A, K_b)."""
        out = self.q_out(self.q_block(embedding))
        return out.reshape(*out.shape[:-1], self.num_actions, len(self.zero_value_probs))

    def predict_aux(self, embedding: jax.Array, action: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Predicted (reward, next embedding) from [phi(x_t), one_hot(a_t)]; ``action`` int (...)."""
        h = jnp.concatenate([embedding, jax.nn.one_hot(action, self.num_actions, dtype=embedding.dtype)], axis=-1)
        out = self.aux_out(self.aux_block(h))
        return out[..., 0], out[..., 1:]

    def q_logits(self, obs: jax.Array) -> jax.Array:
        """HL-Gauss logits of Q(x, .) for every action, (..., A, K_b), without the auxiliary head."""
        return self.logits(self.embed(obs))

    def __call__(self, obs: jax.Array, action: jax.Array):
        emb = self.embed(obs)
        return self.logits(emb), self.predict_aux(emb, action)
