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
        assert c.critic_width is None and c.actor_width == 512  # the critic's width is resolved with the task
        assert resolve(c).critic_width == 512
        assert c.total_steps == 50_000_000
    cpu = preset_config("cpu")
    assert cpu == Config()  # the defaults are the cpu preset
    assert set(PRESETS) == {"cpu", "paper-small", "paper-medium", "paper-large", "minatar"}


def test_minatar_preset_is_the_measured_command():
    """docs/BENCHMARKS.md measured the MinAtar figures with these flags on the cpu preset; ``--preset minatar`` must
    be that same run, so the published returns are the preset's."""
    import tyro

    flags = (
        "--env gymnax:Breakout-MinAtar --eval-envs 32 --total-steps 1007616 --eval-every 251904 --encoder mlp "
        "--num-envs 64 --num-steps 128 --critic-width 256 --actor-width 256 --num-epochs 8 --lr-decay-steps 1007616 "
        "--actor-lr 1e-3"
    ).split()
    measured = resolve(tyro.cli(Config, default=preset_config("cpu"), args=flags))
    preset = resolve(preset_config("minatar", env="gymnax:Breakout-MinAtar"))
    assert dataclasses.replace(preset, preset="cpu") == measured
    assert preset.num_iterations == preset.lr_decay_iterations == 123 and preset.critic_width == 256


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
        ("lr_decay_steps", -1, "lr_decay_steps=-1 must be an integer >= 0"),
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


HUMANOIDS = ("G1JoystickFlatTerrain", "G1JoystickRoughTerrain", "T1JoystickFlatTerrain", "T1JoystickRoughTerrain")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_humanoid_task_preset_is_the_papers(preset):
    """Spec section 7: gamma 0.97, critic width 1024, values in [-10, 10], privileged critic observation."""
    from reppo.envs import task_defaults

    width = {"cpu": 128, "minatar": 256}.get(preset, 512)
    for env in HUMANOIDS:
        c = resolve(preset_config(preset, env=env))
        assert (c.gamma, c.critic_width, c.v_min, c.v_max) == (0.97, 1024, -10.0, 10.0), (preset, env)
        assert c.actor_width == width and task_defaults(env).asymmetric
    c = resolve(preset_config(preset, env="CheetahRun"))
    assert (c.gamma, c.critic_width, c.v_min, c.v_max) == (0.99, width, 0.0, 150.0)


def test_task_presets_never_override_given_values():
    given = dict(gamma=0.9, critic_width=512, v_min=-3.0, v_max=4.0)
    for env in ("T1JoystickFlatTerrain", "PandaPickCube", "CheetahRun"):
        c = resolve(preset_config("paper-small", env=env, **given))
        assert (c.gamma, c.critic_width, c.v_min, c.v_max) == (0.9, 512, -3.0, 4.0)
        assert resolve(c) == c  # a resolved config (config.yaml) resolves to itself
    c = resolve(preset_config("paper-small", env="T1JoystickFlatTerrain", critic_width=128))
    assert c.critic_width == 128 and c.gamma == 0.97
    with pytest.raises(ConfigError, match=r"^critic_width=0 must be a positive integer \(or None: the task preset\)$"):
        validate(Config(critic_width=0))


def test_cli_trains_humanoids_with_the_task_preset(monkeypatch):
    """`reppo train --preset paper-small --env T1JoystickFlatTerrain` used to train a critic of width 512."""
    import reppo.training
    from reppo.cli import main

    seen = []

    def fake_train(config):
        seen.append(resolve(config))  # what training resolves and writes to config.yaml
        return type("Result", (), {"interrupted": False})()

    monkeypatch.setattr(reppo.training, "train", fake_train)
    assert main(["train", "--preset", "paper-small", "--env", "T1JoystickFlatTerrain"]) == 0
    assert main(["train", "--env", "G1JoystickRoughTerrain", "--preset=paper-large", "--critic-width", "2e3"]) == 0
    assert main(["train", "--env", "T1JoystickFlatTerrain", "--gamma", "0.99"]) == 0
    (small, large, cpu) = seen
    assert (small.preset, small.critic_width, small.actor_width, small.gamma) == ("paper-small", 1024, 512, 0.97)
    assert (small.v_min, small.v_max, small.num_minibatches) == (-10.0, 10.0, 16)
    assert (large.critic_width, large.num_steps) == (2000, 128)
    assert (cpu.critic_width, cpu.gamma, cpu.actor_width) == (1024, 0.99, 128)


def _readme_task_presets() -> dict[str, tuple[float, float, float, int | None]]:
    """The task-preset table of README.md: task id -> (gamma, v_min, v_max, critic width or None for "preset")."""
    from pathlib import Path

    text = (Path(__file__).parents[1] / "README.md").read_text()
    table = text.split("| tasks | gamma | value range | critic width |")[1].split("\n\n")[0]
    rows = {}
    for line in table.strip().splitlines()[1:]:
        tasks, gamma, values, width = (cell.strip() for cell in line.strip("|").split("|"))
        v_min, v_max = (float(v) for v in values.strip("[]").split(","))
        for task in tasks.split(", "):
            rows[task] = (float(gamma), v_min, v_max, None if width == "preset" else int(width))
    return rows


def test_task_presets_equal_the_readme_table_and_cover_every_robot_task():
    from mujoco_playground._src import locomotion, manipulation

    from reppo.envs import TASK_PRESETS, task_defaults

    documented = _readme_task_presets()
    assert documented.pop("DM Control (all 25)") == (0.99, 0.0, 150.0, None)
    robot_ids = {*locomotion.ALL_ENVS, *manipulation.ALL_ENVS}
    assert set(documented) == set(TASK_PRESETS) == robot_ids
    for env, (gamma, v_min, v_max, width) in documented.items():
        d = task_defaults(env)
        assert (d.gamma, d.v_min, d.v_max, d.critic_width) == (gamma, v_min, v_max, width), env
        c = resolve(preset_config("paper-small", env=env))
        assert (c.gamma, c.v_min, c.v_max, c.critic_width) == (gamma, v_min, v_max, width or 512), env


def test_robot_task_discounts_are_playgrounds_own_except_the_papers():
    """The tasks the paper does not train take Playground's tuned Brax PPO discount (an independent reference)."""
    from mujoco_playground.config import locomotion_params, manipulation_params

    from reppo.envs import TASK_PRESETS

    for env, (gamma, *_) in TASK_PRESETS.items():
        if env in HUMANOIDS:
            continue
        params = locomotion_params if env in locomotion_params.locomotion.ALL_ENVS else manipulation_params
        assert gamma == params.brax_ppo_config(env).discounting, env


def test_resolve_unknown_env_suggests_close_matches():
    with pytest.raises(UnknownEnvError, match="did you mean: CartpoleBalance"):
        resolve(Config(env="CartpoleBalanse"))


# ---- property tests: any config either validates (and then trains) or fails with one line naming the field ----

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_ANY_VALUE = st.one_of(
    st.integers(-10, 10_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
    st.sampled_from(["CartpoleBalance", "cpu", "jax", "paper-small", "warp", "CheetahRun"]),
    st.lists(st.integers(), max_size=2),
)
_FIELDS = [f.name for f in dataclasses.fields(Config)]


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(_FIELDS), _ANY_VALUE, min_size=1, max_size=4))
def test_any_value_validates_or_fails_with_one_line(overrides):
    config = dataclasses.replace(Config(), **overrides)
    try:
        resolved = resolve(config)
    except (ConfigError, UnknownEnvError) as exc:
        message = str(exc)
        assert "\n" not in message and message
        # the message names a field that was overridden (or a field derived from them, e.g. the batch split)
        named = [name for name in _FIELDS if message.startswith(f"{name}=") or f" {name}=" in message]
        assert named or message.startswith("unknown env"), message
        return
    validate(resolved)  # resolving is idempotent and leaves a valid config


@st.composite
def _small_configs(draw) -> dict:
    """Small configs over every size field, mostly valid (so most draws train); sometimes one value out of range."""
    values = {
        "num_envs": draw(st.integers(1, 12)),
        "num_steps": draw(st.integers(1, 6)),
        "num_epochs": draw(st.integers(1, 3)),
        "num_value_samples": draw(st.integers(1, 5)),
        "num_kl_samples": draw(st.integers(1, 4)),
        "critic_width": draw(st.integers(1, 24)),
        "actor_width": draw(st.integers(1, 24)),
        "critic_depth": draw(st.integers(1, 3)),
        "actor_depth": draw(st.integers(1, 3)),
        "num_bins": draw(st.integers(3, 64)),
        "value_chunk_size": draw(st.integers(1, 64)),
        "lam": draw(st.floats(0, 1)),
        "gamma": draw(st.none() | st.floats(0.01, 1)),
        "kl_bound": draw(st.floats(1e-3, 1.0)),
        "min_std": draw(st.floats(0, 0.5)),
        "entropy_coef": draw(st.floats(0, 2.0)),
        "num_seeds": draw(st.integers(1, 2)),
    }
    batch = values["num_envs"] * values["num_steps"]
    values["num_minibatches"] = draw(st.sampled_from([d for d in range(1, batch + 1) if batch % d == 0]))
    values["init_std"] = values["min_std"] + draw(st.floats(0.01, 2.0))
    v_min = draw(st.floats(-200, 100))
    values["v_min"], values["v_max"] = v_min, v_min + draw(st.floats(1, 300))
    if draw(st.integers(0, 4)) == 0:  # one value out of range
        bad_values = [
            ("num_minibatches", batch + 1), ("lam", 1.5), ("v_max", v_min - 1),
            ("num_bins", 2), ("init_std", values["min_std"]), ("num_envs", 0),
        ]  # fmt: skip
        field, bad = draw(st.sampled_from(bad_values))
        values[field] = bad
    return values


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_small_configs())
def test_drawn_configs_train_one_iteration_or_fail_cleanly(values):
    import jax
    import numpy as np

    from reppo.envs import make_env
    from reppo.rollout import make_rollout

    config = Config(env="ToyAsymmetric", **values)
    try:
        config = resolve(config)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    env = make_env(config.env, config.num_envs * config.num_seeds)
    rollout = make_rollout(config, env)
    keys = jax.numpy.stack([jax.random.PRNGKey(s) for s in range(config.num_seeds)])
    state = rollout.start(keys)  # as training runs it
    state, metrics = jax.jit(rollout.iteration)(state)
    assert int(np.asarray(state.iteration).reshape(-1)[0]) == 1
    for value in jax.tree.leaves(state.learner.actor_params):
        assert np.all(np.isfinite(np.asarray(value)))
