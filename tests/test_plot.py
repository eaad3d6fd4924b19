"""`reppo.plot`: metrics.csv parsing, the mean/interval band (rliable's bootstrap, checked against a bootstrap
written out here), the PNG and the error messages."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from reppo.plot import DPI, FIGSIZE, INTERVALS, _resample, load_curves, mean_and_interval, plot_curves

HEADER = [
    "env_steps",
    "iteration",
    "wall_s",
    "seed",
    "eval/episode_return",
    "eval/episode_return_std",
    "eval/episode_length",
    "perf/sps",
    "train/critic_ce",
]


def _write_run(
    run_dir: Path,
    seeds: dict[int, list[tuple[int, float, float]]],
    env: str = "CartpoleBalance",
    with_seed_column: bool = True,
    config_seed: int = 1,
    tail: str = "",
) -> Path:
    """A run folder with config.yaml and metrics.csv; ``seeds`` maps seed -> [(env_steps, wall_s, return)]."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"env": env, "preset": "fast", "seed": config_seed}))
    header = HEADER if with_seed_column else [c for c in HEADER if c != "seed"]
    rows = []
    for seed, points in seeds.items():
        for i, (steps, wall, ret) in enumerate(points):
            row = {"env_steps": steps, "iteration": i + 1, "wall_s": f"{wall:.3f}", "seed": seed}
            row.update({"eval/episode_return": f"{ret:.6g}", "eval/episode_return_std": "1.5"})
            row.update({"eval/episode_length": "1000", "perf/sps": "12345", "train/critic_ce": ""})
            rows.append(row)
    rows.sort(key=lambda r: (r["env_steps"], r["seed"]))  # interleaved, as a multi-seed run writes them
    with open(run_dir / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        fh.write(tail)
    return run_dir


def _line(seed: int, scale: float = 1.0, n: int = 5, step: int = 1000, t0: float = 2.0):
    return [(step * (i + 1), t0 + 3.0 * (i + 1), scale * (i + 1) + seed) for i in range(n)]


def test_load_curves_multi_seed(tmp_path):
    run = _write_run(tmp_path / "CartpoleBalance__fast__1__x", {1: _line(1), 2: _line(2), 3: _line(3)})
    curves = load_curves([run])
    assert [c.seed for c in curves] == [1, 2, 3]
    for c in curves:
        assert c.label == c.env == "CartpoleBalance" and c.run == run.name
        np.testing.assert_array_equal(c.env_steps, [1000, 2000, 3000, 4000, 5000])
        np.testing.assert_allclose(c.wall_s, [5.0, 8.0, 11.0, 14.0, 17.0])
        np.testing.assert_allclose(c.eval_return, np.arange(1, 6) + c.seed)
    assert {c.label for c in load_curves([run], label_by="run")} == {run.name}


def test_load_curves_without_seed_column_and_truncated_last_line(tmp_path):
    run = _write_run(
        tmp_path / "old",
        {7: _line(0)},
        env="CheetahRun",
        with_seed_column=False,
        config_seed=7,
        tail="6000,6,20.0",  # a killed process cut the last row short
    )
    (curve,) = load_curves([run])
    assert curve.seed == 7 and curve.env == "CheetahRun" and curve.label == "CheetahRun"
    np.testing.assert_array_equal(curve.env_steps, [1000, 2000, 3000, 4000, 5000])
    np.testing.assert_allclose(curve.eval_return, [1, 2, 3, 4, 5])


def test_load_curves_skips_rows_without_eval_return_and_garbage(tmp_path):
    tail = "6000,6,20.0,1,,,,,\n7000,7,23.0,1,not-a-number,,,,\n8000,8,26.0,1,9.5,1,1000,1,0.1\n\0\0\0"
    run = _write_run(tmp_path / "r", {1: _line(0)}, tail=tail)
    (curve,) = load_curves([run])
    np.testing.assert_array_equal(curve.env_steps, [1000, 2000, 3000, 4000, 5000, 8000])
    assert curve.eval_return[-1] == 9.5


def _brute_force_band(values: np.ndarray, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap of the mean at each point, resample by resample: rliable's stratified bootstrap draws
    each cell's seed index from numpy's global generator (``np.random.choice(n, (n, 1 task, points))``)."""
    n, points = values.shape
    np.random.seed(seed)
    means = []
    for _ in range(reps):
        idx = np.random.choice(n, (n, 1, points))[:, 0, :]
        means.append([values[idx[:, j], j].mean() for j in range(points)])
    return np.percentile(means, 2.5, axis=0), np.percentile(means, 97.5, axis=0)


@pytest.mark.parametrize("n_seeds", [2, 3, 6])
def test_bootstrap_matches_brute_force(n_seeds):
    rng = np.random.default_rng()
    values = rng.normal(size=(n_seeds, 4)) * [1.0, 2.0, 5.0, 0.1]
    reps, seed = int(rng.integers(50, 400)), int(rng.integers(0, 1000))
    np.random.seed(12345)
    after = np.random.random()  # what the caller's global generator gives next
    np.random.seed(12345)
    mean, lo, hi = mean_and_interval(values, "ci95", reps=reps, seed=seed)
    assert np.random.random() == after  # the bootstrap leaves the caller's global generator as it was
    brute_lo, brute_hi = _brute_force_band(values, reps, seed)
    np.testing.assert_allclose(mean, values.mean(axis=0))
    np.testing.assert_allclose(lo, brute_lo, rtol=1e-12)
    np.testing.assert_allclose(hi, brute_hi, rtol=1e-12)
    assert np.all(lo <= mean) and np.all(mean <= hi)
    again = mean_and_interval(values, "ci95", reps=reps, seed=seed)
    np.testing.assert_array_equal(again[1], lo)  # seeded: the same band every time


def test_bootstrap_covers_true_mean_and_shrinks_with_more_seeds():
    rng = np.random.default_rng(2)
    # 400 independent data sets as columns; the CI of each should hold the true mean 5.0 about 95% of the time
    small = rng.normal(5.0, 2.0, size=(30, 400))
    _, lo, hi = mean_and_interval(small, "ci95", reps=1000)
    coverage = np.mean((lo <= 5.0) & (5.0 <= hi))
    assert 0.88 <= coverage <= 0.99, coverage
    big = rng.normal(5.0, 2.0, size=(300, 400))
    _, lo_big, hi_big = mean_and_interval(big, "ci95", reps=1000)
    assert np.median(hi_big - lo_big) < 0.5 * np.median(hi - lo)
    # the width is close to the normal-theory 2 * 1.96 * sigma / sqrt(n)
    np.testing.assert_allclose(np.median(hi_big - lo_big), 2 * 1.96 * 2.0 / np.sqrt(300), rtol=0.15)


def test_std_minmax_and_single_seed():
    values = np.array([[1.0, 10.0], [3.0, 20.0], [8.0, 0.0]])
    mean, lo, hi = mean_and_interval(values, "std")
    np.testing.assert_allclose(lo, values.mean(0) - values.std(0))
    np.testing.assert_allclose(hi, values.mean(0) + values.std(0))
    mean, lo, hi = mean_and_interval(values, "minmax")
    np.testing.assert_allclose([lo, hi], [[1.0, 0.0], [8.0, 20.0]])
    for interval in INTERVALS:
        mean, lo, hi = mean_and_interval(values[:1], interval)
        np.testing.assert_array_equal(mean, [1.0, 10.0])
        np.testing.assert_array_equal(lo, mean)
        np.testing.assert_array_equal(hi, mean)


def test_resample_onto_overlap():
    xs = [np.array([0.0, 10.0, 20.0]), np.array([25.0, 5.0, 15.0])]  # the second one out of order
    ys = [np.array([0.0, 10.0, 20.0]), np.array([3.0, 1.0, 2.0])]
    grid, values = _resample(xs, ys, "union")  # the env-steps axis: union of the grids within the overlap
    np.testing.assert_array_equal(grid, [5.0, 10.0, 15.0, 20.0])
    np.testing.assert_allclose(values, [[5.0, 10.0, 15.0, 20.0], [1.0, 1.5, 2.0, 2.5]])
    grid, values = _resample(xs, ys, "linspace")  # the wall-clock axis: an even grid over the overlap
    np.testing.assert_allclose(grid, [5.0, 12.5, 20.0])
    np.testing.assert_allclose(values, [[5.0, 12.5, 20.0], [1.0, 1.75, 2.5]])


@pytest.mark.parametrize("interval", INTERVALS)
def test_plot_writes_png(tmp_path, interval):
    from matplotlib.image import imread

    # two runs of one env (one with two seeds evaluated at other steps) and a single-seed run of another env
    a = _write_run(tmp_path / "a", {1: _line(1), 2: _line(2, scale=1.2)})
    b = _write_run(tmp_path / "b", {3: _line(3, step=1500, n=4, t0=4.0)}, config_seed=3)
    c = _write_run(tmp_path / "c", {1: _line(0, scale=3.0)}, env="CheetahRun")
    out = plot_curves([a, b, c], tmp_path / "plots" / "curves.png", interval=interval)
    assert out == tmp_path / "plots" / "curves.png"
    assert out.stat().st_size > 10_000
    image = imread(out)
    assert image.shape[:2] == (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))
    assert image[..., :3].std() > 0.05  # not blank
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]  # no temp file left behind
    by_run = plot_curves([a, b, c], tmp_path / "by_run.png", label_by="run", interval=interval)
    assert imread(by_run).shape[:2] == image.shape[:2]


def test_errors(tmp_path):
    with pytest.raises(ValueError, match=r"no metrics.csv .*missing[/\\]metrics.csv"):
        load_curves([tmp_path / "missing"])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.csv").write_text(",".join(HEADER) + "\n")
    with pytest.raises(ValueError, match="no evaluation rows"):
        load_curves([empty])
    (empty / "metrics.csv").write_text("")
    with pytest.raises(ValueError, match="no evaluation rows"):
        load_curves([empty])
    run = _write_run(tmp_path / "ok", {1: _line(1)})
    with pytest.raises(ValueError, match="interval='sem' is not one of ci95, std, minmax"):
        plot_curves([run], tmp_path / "x.png", interval="sem")
    with pytest.raises(ValueError, match="interval='sem' is not one of ci95, std, minmax"):
        mean_and_interval(np.ones((2, 3)), "sem")
    with pytest.raises(ValueError, match="label_by='seed' is not one of env, run"):
        plot_curves([run], tmp_path / "x.png", label_by="seed")
    late = _write_run(tmp_path / "late", {2: _line(2, step=10_000)})  # starts after run "ok" ended
    with pytest.raises(ValueError, match="curves of 'CartpoleBalance' do not overlap in env_steps"):
        plot_curves([run, late], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
