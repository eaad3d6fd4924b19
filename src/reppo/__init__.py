"""reppo: REPPO (Relative Entropy Pathwise Policy Optimization) on MuJoCo Playground, in JAX.

Public API (imported lazily so ``import reppo`` stays light): ``Config``, ``train``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Config", "train", "__version__"]

if TYPE_CHECKING:
    from reppo.config import Config
    from reppo.train import train


def __getattr__(name: str):
    if name == "Config":
        from reppo.config import Config

        return Config
    if name == "train":
        from reppo.train import train

        return train
    raise AttributeError(f"module 'reppo' has no attribute {name!r}")
