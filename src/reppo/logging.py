"""Run logs: ``metrics.csv`` and TensorBoard event files behind one small writer."""

from __future__ import annotations

import csv
import math
from pathlib import Path


class RunLogger:
    """Writes scalar rows to ``metrics.csv`` (one header, fixed columns) and to TensorBoard.

    Keys follow TensorBoard's ``group/name`` convention (``eval/episode_return``, ``train/critic_ce``,
    ``perf/sps``). Missing values in a row are written as empty cells.
    """

    def __init__(self, run_dir: Path, columns: list[str], tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.columns = ["env_steps", "iteration", "wall_s", *columns]
        self._csv_path = self.run_dir / "metrics.csv"
        new_file = not self._csv_path.exists()
        self._csv = open(self._csv_path, "a", newline="")  # noqa: SIM115 - kept open for the run
        self._writer = csv.DictWriter(self._csv, fieldnames=self.columns, extrasaction="ignore")
        if new_file:
            self._writer.writeheader()
            self._csv.flush()
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir), flush_secs=10)

    def log(self, env_steps: int, iteration: int, wall_s: float, metrics: dict[str, float]) -> None:
        row = {"env_steps": env_steps, "iteration": iteration, "wall_s": f"{wall_s:.3f}"}
        row.update({k: f"{v:.6g}" for k, v in metrics.items() if k in self.columns})
        self._writer.writerow(row)
        self._csv.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                if math.isfinite(value):
                    self._tb.add_scalar(key, value, env_steps)

    def close(self) -> None:
        self._csv.close()
        if self._tb is not None:
            self._tb.close()
