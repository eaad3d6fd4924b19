"""Learning curves from run folders: ``reppo plot RUN_DIR... --out curves.png``.

Reads each run's ``metrics.csv`` (one row per evaluation per seed) and draws deterministic eval return against
environment steps and against wall-clock seconds, one line per group (env or run) with a band over its seeds.
The 95% band is rliable's percentile bootstrap of the mean (Agarwal et al. 2021), seeded for reproducibility.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

INTERVALS = ("ci95", "std", "minmax")
LABEL_BY = ("env", "run")
RETURN_COLUMN = "eval/episode_return"
FIGSIZE = (12.0, 4.5)  # inches; at DPI this gives a 1200 x 450 pixel PNG
DPI = 100
BOOTSTRAP_REPS = 2000
"""Bootstrap resamples of every interval (rliable's ``reps``)."""
BOOTSTRAP_SEED = 0
"""Seed of numpy's global generator during each bootstrap (:func:`seeded_bootstrap`)."""


@dataclass(eq=False)
class Curve:
    """One seed of one run: eval return at each evaluation, sorted by env steps."""

    label: str
    """Group name in the legend: the config env (``label_by="env"``) or the run folder name (``"run"``)."""
    env: str
    run: str
    """Run folder name."""
    seed: int | None
    env_steps: np.ndarray
    wall_s: np.ndarray
    eval_return: np.ndarray


def _read_config(run_dir: Path) -> dict:
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def _float(cell: str | None) -> float | None:
    try:
        value = float(cell)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _read_rows(path: Path, default_seed: int | None) -> dict[int | None, list[tuple[float, float, float]]]:
    """``{seed: [(env_steps, wall_s, eval_return), ...]}``; rows that do not parse (a cut-off last line) are skipped."""
    text = path.read_text(errors="replace").replace("\0", "")
    rows = csv.reader(text.splitlines())
    header = next(rows, None)
    if header is None:
        return {}
    missing = [c for c in ("env_steps", "wall_s", RETURN_COLUMN) if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    i_steps, i_wall, i_ret = (header.index(c) for c in ("env_steps", "wall_s", RETURN_COLUMN))
    i_seed = header.index("seed") if "seed" in header else None
    by_seed: dict[int | None, list[tuple[float, float, float]]] = {}
    for row in rows:
        if len(row) != len(header):
            continue
        steps, wall, ret = _float(row[i_steps]), _float(row[i_wall]), _float(row[i_ret])
        if steps is None or wall is None or ret is None:
            continue
        seed = default_seed
        if i_seed is not None and row[i_seed].strip():
            seed_value = _float(row[i_seed])
            if seed_value is None or seed_value != int(seed_value):
                continue
            seed = int(seed_value)
        by_seed.setdefault(seed, []).append((steps, wall, ret))
    return by_seed


def load_curves(run_dirs: Sequence[str | Path], *, label_by: str = "env") -> list[Curve]:
    """One Curve per (run folder, seed). Raises ValueError for a folder without metrics.csv or eval rows."""
    if label_by not in LABEL_BY:
        raise ValueError(f"label_by={label_by!r} is not one of {', '.join(LABEL_BY)}")
    if not run_dirs:
        raise ValueError("no run folders given")
    paths = [Path(d).parent if Path(d).name == "metrics.csv" and Path(d).is_file() else Path(d) for d in run_dirs]
    names = [p.resolve().name or str(p) for p in paths]
    curves: list[Curve] = []
    for run_dir, name in zip(paths, names, strict=True):
        csv_path = run_dir / "metrics.csv"
        if not csv_path.is_file():
            raise ValueError(f"{run_dir}: no metrics.csv (expected {csv_path})")
        config = _read_config(run_dir)
        env = str(config.get("env") or name.split("__")[0])
        seed = config.get("seed")
        by_seed = _read_rows(csv_path, seed if isinstance(seed, int) else None)
        if not by_seed:
            raise ValueError(f"{csv_path}: no evaluation rows (no row with env_steps, wall_s and {RETURN_COLUMN})")
        run_label = name if names.count(name) == 1 else str(run_dir)
        for seed_key in sorted(by_seed, key=lambda s: (s is None, s)):
            data = np.array(sorted(by_seed[seed_key], key=lambda r: r[0]), dtype=np.float64)
            curves.append(
                Curve(
                    label=env if label_by == "env" else run_label,
                    env=env,
                    run=run_label,
                    seed=seed_key,
                    env_steps=data[:, 0],
                    wall_s=data[:, 1],
                    eval_return=data[:, 2],
                )
            )
    return curves


@contextmanager
def seeded_bootstrap(seed: int = BOOTSTRAP_SEED) -> Iterator[None]:
    """Seed numpy's global generator for the block, then restore the caller's state.

    rliable's stratified bootstrap draws its indices with ``np.random.choice`` (the global generator), not from
    the ``random_state`` it accepts; seeding it is what makes an interval reproducible.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def mean_and_interval(
    values: np.ndarray, interval: str = "ci95", *, reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 0 of ``values`` (n_seeds, n_points) and the band ``(lo, hi)`` around it.

    ``ci95``: rliable's 95% percentile-bootstrap interval of the mean at each point (``get_interval_estimates``
    of ``aggregate_mean`` on the scores as (n_seeds, 1 task, n_points), ``reps`` resamples of the seeds, under
    :func:`seeded_bootstrap`); ``std``: mean ± ``np.std`` (ddof=0); ``minmax``: min and max. With one seed the
    band is the mean itself.
    """
    if interval not in INTERVALS:
        raise ValueError(f"interval={interval!r} is not one of {', '.join(INTERVALS)}")
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"values must have shape (n_seeds >= 1, n_points), got {values.shape}")
    mean = values.mean(axis=0)
    if values.shape[0] == 1:
        return mean, mean.copy(), mean.copy()
    if interval == "std":
        std = values.std(axis=0)
        return mean, mean - std, mean + std
    if interval == "minmax":
        return mean, values.min(axis=0), values.max(axis=0)
    from rliable import library, metrics

    with seeded_bootstrap(seed):
        _, ci = library.get_interval_estimates({"": values[:, None, :]}, metrics.aggregate_mean, reps=reps)
    return mean, ci[""][0], ci[""][1]


def _sorted(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def _resample(xs: list[np.ndarray], ys: list[np.ndarray], grid: str) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate each (x, y) onto a common grid over the range all of them cover; ``(grid, (n, len(grid)))``."""
    lo, hi = max(float(x.min()) for x in xs), min(float(x.max()) for x in xs)
    if lo > hi:
        raise ValueError("no overlap")
    if grid == "union":
        common = np.unique(np.concatenate(xs))
        common = common[(common >= lo) & (common <= hi)]
    else:
        common = np.linspace(lo, hi, max(len(x) for x in xs)) if hi > lo else np.array([lo])
    return common, np.stack([np.interp(common, *_sorted(x, y)) for x, y in zip(xs, ys, strict=True)])


def _figure():
    """An empty matplotlib Figure of FIGSIZE at DPI on the Agg canvas (no display needed)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("reppo plot needs matplotlib (pip install matplotlib)") from exc

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plot_group(ax, label: str, members: list[Curve], attr: str, grid: str, interval: str, color: str) -> None:
    """Mean and band of one group's curves against ``attr`` (``env_steps`` or ``wall_s``) on ``ax``; the seeds
    are resampled onto a common ``grid`` (see :func:`_resample`) where there are several."""
    xs = [getattr(c, attr) for c in members]
    ys = [c.eval_return for c in members]
    try:
        if len(members) == 1:
            x, y = _sorted(xs[0], ys[0])
            values = y[None]
        else:
            x, values = _resample(xs, ys, grid)
    except ValueError:
        raise ValueError(
            f"the {len(members)} curves of {label!r} do not overlap in {attr}; try label_by='run'"
        ) from None
    mean, lo, hi = mean_and_interval(values, interval)
    marker = "o" if len(x) == 1 else None
    ax.plot(x, mean, color=color, label=f"{label} (n={len(members)})", marker=marker)
    if len(members) > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.25, linewidth=0)


def _label_panels(fig, ax_steps, ax_wall, interval: str) -> None:
    """Titles, axis labels, grids and legends of the two panels, and the band's meaning above them."""
    band_name = {"ci95": "95% bootstrap CI of the mean", "std": "mean ± std", "minmax": "min to max"}[interval]
    ax_steps.set(title="eval return vs environment steps", xlabel="environment steps")
    ax_wall.set(title="eval return vs wall-clock time", xlabel="wall-clock seconds")
    for ax in (ax_steps, ax_wall):
        ax.set_ylabel("deterministic eval return")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(f"mean over seeds; band: {band_name}", fontsize="medium")


def _save_png(fig, out: Path) -> Path:
    """Write ``fig`` to ``out`` as a PNG atomically (a temporary file beside it, then renamed); return ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=DPI)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the PNG ordinary permissions
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def plot_curves(
    run_dirs: Sequence[str | Path], out: str | Path, *, label_by: str = "env", interval: str = "ci95"
) -> Path:
    """Write a PNG of eval return vs env steps and vs wall-clock seconds, mean and band per group; return ``out``."""
    if interval not in INTERVALS:
        raise ValueError(f"interval={interval!r} is not one of {', '.join(INTERVALS)}")
    groups: dict[str, list[Curve]] = {}
    for curve in load_curves(run_dirs, label_by=label_by):
        groups.setdefault(curve.label, []).append(curve)

    fig = _figure()
    ax_steps, ax_wall = fig.subplots(1, 2)
    for i, (label, members) in enumerate(groups.items()):
        for ax, attr, grid in ((ax_steps, "env_steps", "union"), (ax_wall, "wall_s", "linspace")):
            _plot_group(ax, label, members, attr, grid, interval, color=f"C{i % 10}")
    _label_panels(fig, ax_steps, ax_wall, interval)
    return _save_png(fig, Path(out))
