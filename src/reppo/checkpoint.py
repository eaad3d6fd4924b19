"""Orbax checkpoints of a run: ``RUN_DIR/checkpoints/<iteration>/`` with three items.

- ``state``: the whole :class:`reppo.rollout.TrainState` (networks, optimiser states, dual variables,
  normaliser statistics, PRNG key, iteration counter and the env state, reset pool included), so a resumed run
  continues bit for bit.
- ``policy``: the actor parameters and actor observation statistics alone, so ``reppo.load`` needs neither the
  env nor the rest of the state.
- ``meta``: JSON with the loop's position (iteration, env steps, wall-clock, the train metrics accumulated since
  the last evaluation) and what ``load`` needs to rebuild the actor (obs and action sizes).

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a process killed during a
write leaves the previous checkpoints intact and the half-written one invisible. Checkpoints beyond the last
``max_to_keep`` are first renamed into ``checkpoints/.deleted/`` and only then removed: removing a folder in place is
not atomic, and a process killed during it left a half-deleted step that still looked like a checkpoint (found by
``tests/test_files.py``, which kills writers many times).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

CHECKPOINT_DIR = "checkpoints"
MAX_TO_KEEP = 3
DELETED_DIR = ".deleted"  # inside CHECKPOINT_DIR: old checkpoints are renamed here, then removed


class CheckpointError(RuntimeError):
    """A run folder has no usable checkpoint."""


def _flatten(tree: Any) -> dict[str, Any]:
    """The non-empty leaves as a flat dict (orbax cannot store zero-size arrays, e.g. MJX's empty actuator
    vector of some models; those are rebuilt from the abstract state on restore)."""
    return {f"leaf_{i:05d}": x for i, x in enumerate(jax.tree.leaves(tree)) if x.size > 0}


def _unflatten(abstract: Any, flat: dict[str, Any]) -> Any:
    leaves, treedef = jax.tree.flatten(abstract)
    out = [flat[f"leaf_{i:05d}"] if x.size > 0 else np.zeros(x.shape, x.dtype) for i, x in enumerate(leaves)]
    return jax.tree.unflatten(treedef, out)


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


class Checkpointer:
    """Saves and restores the checkpoints of one run folder (synchronous writes, the last ``max_to_keep`` kept)."""

    def __init__(self, run_dir: str | Path, max_to_keep: int = MAX_TO_KEEP, create: bool = True):
        ocp = _ocp()
        self.directory = (Path(run_dir) / CHECKPOINT_DIR).absolute()
        if not create and not self.directory.is_dir():
            raise CheckpointError(f"{run_dir} has no {CHECKPOINT_DIR}/ folder: not a reppo run, or no checkpoint yet")
        # In a multi-process run each process uses its own manager alone (no cross-process barriers): process 0
        # saves host copies of the state, and every process may read (reppo.parallel).
        this = jax.process_index()
        if create:  # orbax cannot create it itself with active_processes set
            self.directory.mkdir(parents=True, exist_ok=True)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=False,
            enable_async_checkpointing=False,
            todelete_subdir=DELETED_DIR,
            multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=this, active_processes={this}),
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._purge_deleted()

    def _purge_deleted(self) -> None:
        """Remove the checkpoints renamed away (also those a killed process left there)."""
        shutil.rmtree(self.directory / DELETED_DIR, ignore_errors=True)

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest(self) -> int | None:
        return self._manager.latest_step()

    def save(self, iteration: int, state: Any, policy: Any, meta: dict[str, Any]) -> None:
        ocp = _ocp()
        self._manager.save(
            iteration,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_flatten(state)),
                policy=ocp.args.StandardSave(policy),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        self._manager.wait_until_finished()
        self._purge_deleted()

    def _step(self, iteration: int | None) -> int:
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        if iteration is None:
            return steps[-1]
        if iteration not in steps:
            raise CheckpointError(f"no checkpoint at iteration {iteration}; available: {', '.join(map(str, steps))}")
        return iteration

    def restore(self, abstract_state: Any, iteration: int | None = None) -> tuple[Any, dict[str, Any]]:
        """The full state as numpy arrays (structured like ``abstract_state``: arrays or ``jax.ShapeDtypeStruct``s)
        and the metadata; ``reppo.parallel.put`` places it on devices."""
        ocp = _ocp()
        step = self._step(iteration)
        target = _flatten(jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract_state))
        out = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
        )
        return _unflatten(abstract_state, out["state"]), dict(out["meta"])

    def restore_policy(self, iteration: int | None = None) -> tuple[Any, dict[str, Any]]:
        """The ``policy`` item (actor params and obs statistics, as nested dicts of arrays) and the metadata."""
        ocp = _ocp()
        step = self._step(iteration)
        out = self._manager.restore(
            step, args=ocp.args.Composite(policy=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
        )
        return out["policy"], dict(out["meta"])

    def close(self) -> None:
        self._manager.close()
