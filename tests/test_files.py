"""Run-folder files under faults: processes killed (SIGKILL) at random moments while writing, many times, leave the
previous checkpoint loadable, ``metrics.csv`` parseable and atomically written files whole; a run folder that is
not writable or too full is reported at start with one line."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from reppo.checkpoint import Checkpointer
from reppo.cli import main
from reppo.logging import METRICS_FILE, read_metrics, rewrite_metrics

ARRAY = 256 * 1024  # float32 elements per checkpointed array: 1 MiB, so a save takes long enough to be hit


def _kill_during(args: list[str], seconds: float, ready: str = "ready") -> int:
    """Start ``python args``, wait for its ``ready`` line, let it write for ``seconds``, SIGKILL it; returns how many
    progress lines it printed after the ready line."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == ready
        time.sleep(seconds)
        proc.send_signal(signal.SIGKILL)
        return len(proc.stdout.read().splitlines())
    finally:
        proc.kill()
        proc.wait()


def _reader_sees_whole_versions(path: Path, versions: dict[str, bytes]) -> None:
    data = path.read_bytes()
    assert data in versions.values(), f"torn file of {len(data)} bytes"


def test_write_atomic_survives_kill_9_at_any_moment(tmp_path):
    """A process replacing a 4 MB file in a loop is killed 25 times; the file is always one complete version and no
    temporary file is visible under its name."""
    target = tmp_path / "data.bin"
    writer = textwrap.dedent(
        f"""
        import sys
        from reppo.files import write_atomic
        versions = [bytes([65 + v]) * (4 * 2**20 + v) for v in range(3)]
        write_atomic({str(target)!r}, versions[0])
        print("ready", flush=True)
        i = 0
        while True:
            i += 1
            write_atomic({str(target)!r}, versions[i % 3])
            print(i, flush=True)
        """
    )
    versions = {str(v): bytes([65 + v]) * (4 * 2**20 + v) for v in range(3)}
    rng = random.Random()
    writes = 0
    for _ in range(25):
        writes += _kill_during(["-c", writer], rng.uniform(0.0, 0.3))
        _reader_sees_whole_versions(target, versions)
    assert writes > 25  # the kills did land among writes
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "data.bin"]
    assert all(name.startswith(".data.bin.") and name.endswith(".tmp") for name in leftovers)  # hidden, never read


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pathlib import Path
    from reppo.checkpoint import Checkpointer
    from reppo.logging import METRICS_FILE, RunLogger, rewrite_metrics

    run, size, last = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ckpt = Checkpointer(run)
    start = ckpt.latest() or 0
    if (run / METRICS_FILE).exists():  # as a resumed run does: rows logged after the checkpoint go
        rewrite_metrics(run / METRICS_FILE, lambda row: int(row["iteration"]) <= start)
    logger = RunLogger(run, ["value"], [0, 1], tensorboard=False)
    print("ready", flush=True)
    for i in range(start + 1, last + 1):
        state = {"a": np.full(size, i, np.float32), "b": {"c": np.arange(size, dtype=np.float32) + i}}
        logger.log(i * 10, i, 0.5 * i, [{"value": float(i)}, {"value": -float(i)}])
        ckpt.save(i, state, {"w": np.full(7, i, np.float32)}, {"iteration": i, "pending": [[float(i)] * 3]})
        print(i, flush=True)
    logger.close()
    ckpt.close()
    """
)


def _check_run(run: Path, size: int) -> int:
    """The latest checkpoint restores to the values its writer saved, every older one kept restores too, and
    metrics.csv parses into consecutive rows 1..k for both seeds. Returns the latest checkpoint's iteration."""
    import jax

    ckpt = Checkpointer(run, create=False)
    abstract = {
        "a": jax.ShapeDtypeStruct((size,), np.float32),
        "b": {"c": jax.ShapeDtypeStruct((size,), np.float32)},
    }
    for step in ckpt.steps():
        state, meta = ckpt.restore(abstract, step)
        np.testing.assert_array_equal(state["a"], np.full(size, step, np.float32))
        np.testing.assert_array_equal(state["b"]["c"], np.arange(size, dtype=np.float32) + step)
        assert meta["iteration"] == step and meta["pending"] == [[float(step)] * 3]
        policy, _ = ckpt.restore_policy(step)
        np.testing.assert_array_equal(policy["w"], np.full(7, step, np.float32))
    latest = ckpt.latest()
    ckpt.close()
    rows = read_metrics(run / METRICS_FILE) if (run / METRICS_FILE).exists() else []
    for k, row in enumerate(rows):  # rows come in seed pairs; a kill may split the last pair
        i, seed = k // 2 + 1, k % 2
        assert (int(row["iteration"]), int(row["seed"]), float(row["value"])) == (i, seed, i * (1 - 2 * seed))
    assert latest is None or len(rows) >= 2 * latest  # logged before checkpointing, as reppo train does
    return latest or 0


@pytest.mark.parametrize("kills", [12])
def test_checkpoints_and_metrics_survive_kill_9_during_writes(tmp_path, kills):
    """Checkpoint and metrics writers killed at random moments ``kills`` times, each time resumed from the latest
    checkpoint as ``reppo train --resume`` does; then run to the end: a log of every iteration exactly once."""
    run, last = tmp_path / "run", 10_000
    rng = random.Random()
    latest = []
    for _ in range(kills):
        _kill_during(["-c", WRITER, str(run), str(ARRAY), str(last)], rng.uniform(0.2, 1.5))
        latest.append(_check_run(run, ARRAY))
    assert latest[-1] > 0 and latest == sorted(latest)  # progress across kills, never lost
    subprocess.run([sys.executable, "-c", WRITER, str(run), str(ARRAY), str(latest[-1] + 3)], check=True,
                   capture_output=True)  # fmt: skip
    assert _check_run(run, ARRAY) == latest[-1] + 3
    rows = read_metrics(run / METRICS_FILE)
    assert [int(r["iteration"]) for r in rows] == [i for i in range(1, latest[-1] + 4) for _ in range(2)]
    # nothing but metrics.csv and the checkpoints: no stray temporary file a reader could pick up
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", METRICS_FILE]


def test_rewrite_metrics_drops_a_torn_tail(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text("env_steps,iteration,value\n10,1,0.5\n20,2,0.25\n30,3,0.1")  # torn: no newline
    assert [r["iteration"] for r in read_metrics(path)] == ["1", "2"]
    assert rewrite_metrics(path, lambda row: int(row["iteration"]) <= 1) == 1
    assert path.read_text() == "env_steps,iteration,value\n10,1,0.5\n"


# ---------------------------------------------------------------------------------------------------------------
# Run folders reported at start

TINY = ["--env", "ToyAsymmetric", "--num-envs", "8", "--num-steps", "4", "--num-minibatches", "2",
        "--critic-width", "16", "--actor-width", "16", "--total-steps", "64", "--no-progress"]  # fmt: skip


def _train_fails(run_dir: Path, capsys) -> str:
    assert main(["train", "--run-dir", str(run_dir), *TINY]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_unwritable_run_folder_is_reported_at_start(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    line = _train_fails(blocker / "run", capsys)
    assert line.startswith(f"reppo: error: run folder {blocker / 'run'} is not writable")
    assert blocker.read_text() == "not a folder"


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 2 MiB tmpfs (needs mount permission, as root in a container usually has)."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_run_folder_is_reported_at_start(small_filesystem, capsys):
    line = _train_fails(small_filesystem / "run", capsys)
    assert line.startswith(f"reppo: error: run folder {small_filesystem / 'run'} has ")
    assert "MiB free; this run needs about" in line and "checkpoints of" in line
    assert not (small_filesystem / "run" / "checkpoints").exists()


def test_free_space_check_counts_checkpoints_and_videos(tmp_path, capsys, monkeypatch):
    """Without mount permission: the same check with the file system's answer replaced, at the size boundary."""
    from reppo import training

    real = shutil.disk_usage
    free = {"bytes": 0}
    monkeypatch.setattr(training.shutil, "disk_usage", lambda p: real(p)._replace(free=free["bytes"]))
    line = _train_fails(tmp_path / "run", capsys)
    need_mib = float(line.split("needs about ")[1].split(" MiB")[0])
    checkpoint_mib = float(line.split("checkpoints of ")[1].split(" MiB")[0])
    assert need_mib == pytest.approx(4 * checkpoint_mib + training.LOG_BYTES / 2**20, abs=0.25)  # printed to 0.1
    free["bytes"] = int(need_mib * 2**20) + 2**20  # enough: the run trains
    assert main(["train", "--run-dir", str(tmp_path / "ok"), *TINY]) == 0
    assert (tmp_path / "ok" / "checkpoints").is_dir()
