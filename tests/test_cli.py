"""The `reppo` command line: flags, presets, bad input (exit 2, one line, before any compile) and a real run."""

from __future__ import annotations

import csv
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from reppo.cli import _preprocess, main


def _reppo(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reppo.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_scientific_notation_and_preset_detection():
    preset, args = _preprocess(["--total-steps", "5e6", "--preset", "paper-small", "--seed=3", "--lam", "0.9"])
    assert preset == "paper-small"
    assert args == ["--total-steps", "5000000", "--preset", "paper-small", "--seed=3", "--lam", "0.9"]
    preset, args = _preprocess(["--preset=paper-large", "--eval-every=2.5e5"])
    assert preset == "paper-large" and args == ["--preset=paper-large", "--eval-every=250000"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--env", "CartpoleBalanc"], "unknown env 'CartpoleBalanc'; did you mean: CartpoleBalance"),
        (["--total-steps", "-5"], "total_steps=-5 must be a positive integer"),
        (["--num-minibatches", "7"], "num_minibatches=7 must divide num_envs * num_steps = 8192"),
        (["--preset", "huge"], "preset='huge' is not a preset"),
        (["--v-min", "10", "--v-max", "0"], "v_min=10.0 must be below v_max=0.0"),
    ],
)
def test_bad_input_fails_fast_with_one_line(args, needle, tmp_path):
    start = time.perf_counter()
    proc = _reppo("train", "--run-dir", str(tmp_path / "run"), *args)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert time.perf_counter() - start < 60  # nothing compiled
    assert not (tmp_path / "run").exists()


def test_help_lists_every_config_field_with_its_doc():
    import dataclasses

    from reppo.config import Config

    proc = _reppo("train", "--help")
    assert proc.returncode == 0
    for f in dataclasses.fields(Config):
        assert "--" + f.name.replace("_", "-") in proc.stdout, f.name
    assert "TD(lambda) parameter" in proc.stdout


def test_unknown_command():
    assert main(["fly"]) == 2


def _tensorboard_tags(run_dir: Path) -> set[str]:
    """Read scalar tags from TensorBoard event files (TFRecord framing parsed by hand)."""
    from tensorboardX.proto import event_pb2

    tags = set()
    for path in run_dir.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            record = data[pos + 12 : pos + 12 + length]
            pos += 12 + length + 4
            event = event_pb2.Event()
            event.ParseFromString(record)
            tags.update(v.tag for v in event.summary.value)
    return tags


def test_real_training_run_writes_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    proc = _reppo(
        "train",
        "--env",
        "CartpoleBalance",
        "--num-envs",
        "32",
        "--num-steps",
        "4",
        "--num-minibatches",
        "2",
        "--num-epochs",
        "1",
        "--critic-width",
        "16",
        "--actor-width",
        "16",
        "--total-steps",
        "384",
        "--eval-every",
        "128",
        "--eval-envs",
        "2",
        "--run-dir",
        str(run_dir),
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert str(run_dir) in proc.stdout
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["env"] == "CartpoleBalance" and config["gamma"] == 0.99 and config["v_max"] == 150.0
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [int(r["env_steps"]) for r in rows] == [128, 256, 384]
    for row in rows:
        assert 0.0 <= float(row["eval/episode_return"]) <= 1000.0
        assert float(row["eval/episode_length"]) == 1000.0
        assert 0.0 <= float(row["train/clipped_target_frac"]) <= 1.0
    tags = _tensorboard_tags(run_dir)
    assert {
        "eval/episode_return",
        "perf/sps",
        "train/critic_ce",
        "train/entropy",
        "train/kl",
        "train/alpha",
        "train/beta",
        "train/clipped_target_frac",
    } <= tags
