"""reppo: REPPO (Relative Entropy Pathwise Policy Optimization) on MuJoCo Playground, in JAX.

Public API (imported lazily so ``import reppo`` stays light):

- ``Config``: the hyperparameters of a run (``reppo.config.Config``).
- ``train(config, run_dir=None) -> TrainResult``: train, log and checkpoint a run.
- ``resume(run_dir, total_steps=None) -> TrainResult``: continue (or extend) a run from its latest checkpoint.
- ``load(run_dir, seed_index=0) -> Policy``: the trained policy, raw observation to action.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Config", "Policy", "TrainResult", "load", "resume", "train", "__version__"]

if TYPE_CHECKING:
    from reppo.config import Config
    from reppo.policy import Policy, load
    from reppo.training import TrainResult, resume, train

_WHERE = {
    "Config": "reppo.config",
    "Policy": "reppo.policy",
    "load": "reppo.policy",
    "TrainResult": "reppo.training",
    "resume": "reppo.training",
    "train": "reppo.training",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'reppo' has no attribute {name!r}")
