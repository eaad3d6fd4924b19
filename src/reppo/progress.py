"""What a person sees and does while a run trains: the live progress display and Ctrl-C."""

from __future__ import annotations

import signal
import threading
from typing import Any


class Progress:
    """Live display: env steps, steps/s, latest eval return, ETA (rich). A no-op when disabled."""

    def __init__(self, enabled: bool, total_steps: int, completed: int, description: str):
        self._progress = None
        if not enabled:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
            TextColumn("{task.fields[sps]:>8,.0f} steps/s"),
            TextColumn("eval {task.fields[eval]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self._task = self._progress.add_task(description, total=total_steps, completed=completed, sps=0.0, eval="-")
        self._progress.start()

    def update(self, steps: int, sps: float, eval_return: float | None = None) -> None:
        if self._progress is None:
            return
        fields: dict[str, Any] = {"sps": sps}
        if eval_return is not None:
            fields["eval"] = f"{eval_return:.1f}"
        self._progress.update(self._task, completed=steps, **fields)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


class StopRequest:
    """First Ctrl-C: finish the current iteration, checkpoint, return. Second Ctrl-C: abort at once."""

    def __init__(self, echo):
        self.requested = False
        self._echo = echo
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._echo("reppo: Ctrl-C: stopping after this iteration and writing a checkpoint (Ctrl-C again aborts)")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
