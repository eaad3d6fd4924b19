"""Config validation and presets: every bad value fails with one line naming the field, value and what is allowed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from reppo.config import PRESETS, Config, ConfigError, preset_config, resolve, validate
from reppo.envs import UnknownEnvError


def test_presets_match_spec_section_7():
    for name, envs_steps, minibatches in (
        ("paper-small", 32, 16),
        ("paper-medium", 64, 32),
        ("paper-large", 128, 64),
    ):
        c = preset_config(name)
        assert (c.num_envs, c.num_steps, c.num_minibatches) == (1024, envs_steps, minibatches)
        assert c.minibatch_size == 2048 and c.num_epochs == 8
        assert c.critic_width == c.actor_width == 512
        assert c.total_steps == 50_000_000
    cpu = preset_config("cpu")
    assert cpu == Config()  # the defaults are the cpu preset
    assert set(PRESETS) == {"cpu", "paper-small", "paper-medium", "paper-large"}


def test_overrides_apply_on_top_of_preset():
    c = preset_config("paper-small", num_epochs=3, seed=7)
    assert (c.num_epochs, c.seed, c.num_envs) == (3, 7, 1024)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("total_steps", -5, "total_steps=-5 must be a positive integer"),
        ("num_envs", 0, "num_envs=0"),
        ("num_minibatches", 7, "num_minibatches=7 must divide num_envs * num_steps = 8192"),
        ("lam", 1.5, "lam=1.5 must be in [0, 1]"),
        ("gamma", 0.0, "gamma=0.0 must be in (0, 1]"),
        ("actor_lr", float("nan"), "actor_lr=nan"),
        ("kl_bound", -0.1, "kl_bound=-0.1"),
        ("num_bins", 2, "num_bins=2"),
    ],
)
def test_bad_values_name_field_and_value(field, value, needle):
    with pytest.raises(ConfigError) as info:
        validate(dataclasses.replace(Config(), **{field: value}))
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_value_range_order():
    with pytest.raises(ConfigError, match=r"v_min=5.0 must be below v_max=1.0"):
        validate(Config(v_min=5.0, v_max=1.0))


def test_unknown_preset():
    with pytest.raises(ConfigError, match="preset='huge' is not a preset; allowed: cpu, paper-small"):
        preset_config("huge")


def test_random_divisibility_against_brute_force():
    rng = np.random.default_rng()
    for _ in range(50):
        envs, steps, mbs = (int(x) for x in rng.integers(1, 64, size=3))
        c = dataclasses.replace(Config(), num_envs=envs, num_steps=steps, num_minibatches=mbs)
        if (envs * steps) % mbs == 0:
            validate(c)
        else:
            with pytest.raises(ConfigError, match="must divide"):
                validate(c)


def test_resolve_fills_task_presets():
    c = resolve(Config(env="CheetahRun"))
    assert (c.gamma, c.v_min, c.v_max) == (0.99, 0.0, 150.0)
    c = resolve(Config(env="CheetahRun", gamma=0.95, v_max=50.0))
    assert (c.gamma, c.v_min, c.v_max) == (0.95, 0.0, 50.0)


def test_resolve_unknown_env_suggests_close_matches():
    with pytest.raises(UnknownEnvError, match="did you mean: CartpoleBalance"):
        resolve(Config(env="CartpoleBalanse"))
