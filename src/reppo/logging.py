"""Run logs: ``metrics.csv``, TensorBoard event files and (optionally) Weights & Biases behind one writer.

``metrics.csv`` has one row per evaluation and seed (column ``seed``). TensorBoard gets the aggregate over seeds
in the run folder and, for several seeds, each seed in ``seed_<s>/`` so TensorBoard overlays them. W&B gets the
aggregate plus ``seed_<s>/...`` keys.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reppo.files import write_atomic

METRICS_FILE = "metrics.csv"
BASE_COLUMNS = ["env_steps", "iteration", "wall_s", "seed"]


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """The complete rows of a metrics.csv (a partial last line left by a killed process is skipped)."""
    with open(path, newline="") as f:
        text = f.read()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    reader = csv.DictReader(lines)
    width = len(reader.fieldnames or [])
    return [row for row in reader if len(row) == width and None not in row.values()]


def rewrite_metrics(path: Path, keep: Callable[[dict[str, str]], bool]) -> int:
    """Atomically rewrite ``path`` with the complete rows ``keep`` accepts; returns the number dropped. A file left
    with no complete row (or a torn header) is removed, so the next writer starts it with a fresh header."""
    with open(path, newline="") as f:
        first = f.readline()
    rows = read_metrics(path) if first.endswith("\n") else []
    kept = [row for row in rows if keep(row)]
    if not kept:
        path.unlink()
        return len(rows)
    header = next(csv.reader([first]))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=header)
    writer.writeheader()
    writer.writerows(kept)
    write_atomic(path, text.getvalue())
    return len(rows) - len(kept)


def mean_over_seeds(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """The aggregate row of one evaluation: each metric's mean over the seeds."""
    return {k: sum(m[k] for m in per_seed) / len(per_seed) for k in per_seed[0]}


class RunLogger:
    """Writes evaluation rows: CSV per seed, TensorBoard aggregate (+ per seed), W&B if a run is given.

    Keys follow TensorBoard's ``group/name`` convention (``eval/episode_return``, ``train/critic_ce``,
    ``perf/sps``). ``purge_step`` (on resume) makes TensorBoard drop events at or after that step written by the
    interrupted process, so a resumed run shows one curve.
    """

    def __init__(
        self,
        run_dir: Path,
        columns: list[str],
        seeds: list[int],
        *,
        tensorboard: bool = True,
        purge_step: int | None = None,
        wandb_run: Any = None,
    ):
        self.run_dir = Path(run_dir)
        self.seeds = list(seeds)
        self.columns = [*BASE_COLUMNS, *columns]
        self._csv_path = self.run_dir / METRICS_FILE
        new_file = not self._csv_path.exists() or self._csv_path.stat().st_size == 0
        self._csv = open(self._csv_path, "a", newline="")  # noqa: SIM115 - kept open for the run
        self._writer = csv.DictWriter(self._csv, fieldnames=self.columns, extrasaction="ignore")
        if new_file:
            self._writer.writeheader()
            self._csv.flush()
        self._tb: dict[str, Any] = {}
        if tensorboard:
            from tensorboardX import SummaryWriter

            dirs = {"": self.run_dir}
            if len(self.seeds) > 1:
                dirs.update({f"seed_{s}": self.run_dir / f"seed_{s}" for s in self.seeds})
            self._tb = {
                name: SummaryWriter(str(path), flush_secs=10, purge_step=purge_step) for name, path in dirs.items()
            }
        self._wandb = wandb_run

    def log(self, env_steps: int, iteration: int, wall_s: float, per_seed: list[dict[str, float]]) -> dict[str, float]:
        """One evaluation: ``per_seed[k]`` holds seed ``seeds[k]``'s metrics. Returns the aggregate (mean)."""
        lines = []
        for seed, metrics in zip(self.seeds, per_seed, strict=True):
            row = {"env_steps": env_steps, "iteration": iteration, "wall_s": f"{wall_s:.3f}", "seed": seed}
            row.update({k: f"{v:.6g}" for k, v in metrics.items() if k in self.columns})
            lines.append(row)
        self._writer.writerows(lines)
        self._csv.flush()
        aggregate = mean_over_seeds(per_seed)
        self._scalars("", aggregate, env_steps)
        if len(self.seeds) > 1:
            for seed, metrics in zip(self.seeds, per_seed, strict=True):
                self._scalars(f"seed_{seed}", metrics, env_steps)
        if self._wandb is not None:
            payload = {k: v for k, v in aggregate.items() if math.isfinite(v)}
            if len(self.seeds) > 1:
                for seed, metrics in zip(self.seeds, per_seed, strict=True):
                    payload.update({f"seed_{seed}/{k}": v for k, v in metrics.items() if math.isfinite(v)})
            self._wandb.log({"env_steps": env_steps, "wall_s": wall_s, **payload}, step=env_steps)
        return aggregate

    def _scalars(self, writer: str, metrics: dict[str, float], step: int) -> None:
        tb = self._tb.get(writer)
        if tb is None:
            return
        for key, value in metrics.items():
            if math.isfinite(value):
                tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._csv.close()
        for tb in self._tb.values():
            tb.close()
        if self._wandb is not None:
            self._wandb.finish()
