"""The host side of the NaN/Inf guard: consecutive rolled-back iterations per seed, and the stop.

The compiled iteration rolls back non-finite updates and counts them in its ``health/*`` metrics
(``reppo.algo.guard``). :class:`HealthMonitor` reads those flags, warns once, and reports the seeds that reached
``max_bad_iterations`` consecutive rollbacks; the host loop then checkpoints and raises
:class:`TrainingDivergedError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reppo.config import Config


class TrainingDivergedError(RuntimeError):
    """A seed had ``max_bad_iterations`` consecutive iterations rolled back for non-finite values; the message is
    one line naming the iteration, the failed checks, the envs reset and the last good checkpoint."""

    def __init__(self, message: str, *, iteration: int, checkpoint: Path, checks: list[str], envs_reset: int):
        super().__init__(message)
        self.iteration = iteration
        self.checkpoint = checkpoint
        self.checks = checks
        self.envs_reset = envs_reset


class HealthMonitor:
    """Consecutive rolled-back iterations per seed, from each iteration's ``health/*`` metrics."""

    CHECKS = ("obs", "reward", "loss", "params")

    def __init__(self, config: Config, echo):
        self.config, self.echo = config, echo
        self.limit, self.num_seeds = config.max_bad_iterations, config.num_seeds
        self.streak = np.zeros(self.num_seeds, np.int64)
        self.envs = np.zeros(self.num_seeds, np.int64)  # envs reset during the current streak
        self.failed = [set() for _ in range(self.num_seeds)]  # checks failed during the current streak
        self.warned = False

    def _read(self, metrics, name: str) -> np.ndarray:
        return np.asarray(metrics[name], np.float64).reshape(self.num_seeds)

    def update(self, i: int, metrics: dict[str, Any]) -> list[int]:
        """Count iteration ``i``; returns the indices of the seeds that reached the limit (empty: carry on)."""
        rolled = self._read(metrics, "health/rolled_back") > 0  # blocks until the iteration is done
        if not rolled.any():
            self.streak[:], self.envs[:] = 0, 0
            self.failed = [set() for _ in range(self.num_seeds)]
            return []
        bad_envs = self._read(metrics, "health/bad_envs")
        flags = {c: self._read(metrics, f"health/nonfinite_{c}") > 0 for c in self.CHECKS}
        for s in range(self.num_seeds):
            if not rolled[s]:
                self.streak[s], self.envs[s], self.failed[s] = 0, 0, set()
                continue
            self.streak[s] += 1
            self.envs[s] += int(bad_envs[s])
            self.failed[s] |= {c for c in self.CHECKS if flags[c][s]}
        if not self.warned:
            self.warned = True
            which = [s for s in range(self.num_seeds) if rolled[s]]
            self.echo(
                f"reppo: warning: iteration {i}: non-finite {self.describe(which)}; update rolled back, "
                f"{int(bad_envs[which].sum())} envs reset (the run stops after {self.limit} consecutive; "
                "further ones are counted in the health/* columns)"
            )
        return [s for s in range(self.num_seeds) if self.streak[s] >= self.limit]

    def checks(self, which: list[int]) -> list[str]:
        return sorted(set().union(*(self.failed[s] for s in which)), key=self.CHECKS.index)

    def describe(self, which: list[int]) -> str:
        return ", ".join(self.checks(which)) or "values"

    def diverged(self, which: list[int], i: int, seeds: list[int], checkpoint: Path) -> TrainingDivergedError:
        """The error for seeds ``which`` (indices) that diverged at iteration ``i``, checkpointed at ``checkpoint``."""
        c = self.config
        seed_text = f", seed {', '.join(str(seeds[s]) for s in which)}" if c.num_seeds > 1 else ""
        envs = int(sum(self.envs[s] for s in which))
        message = (
            f"training diverged at iteration {i} ({i * c.batch_size:,} env steps{seed_text}): "
            f"{c.max_bad_iterations} consecutive iterations rolled back for non-finite {self.describe(which)}, "
            f"{envs} envs reset; last good checkpoint: {checkpoint}"
        )
        return TrainingDivergedError(message, iteration=i, checkpoint=checkpoint, checks=self.checks(which),
                                     envs_reset=envs)  # fmt: skip
