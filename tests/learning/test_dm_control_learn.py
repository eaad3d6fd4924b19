"""Learning regression on DM Control tasks beyond the embedded default (issue 22, item 6): each reaches 80% of the
published REPPO return (``reppo_small_data`` in ``../shared/reference/dmc_final_returns.csv``: the mean final
return of the paper's runs after 50M env steps on a GPU) within a CPU budget of minutes.

Several seeds train in one program, and the test asks for the median seed: a trajectory depends on the processor's
floating-point code, and at these budgets REPPO's deterministic policy can still swing between evaluations, so one
seed's last point is not a property of the code. Each seed's score is the best of its last two evaluations (as in
the embedded default's test). The budgets and what the seeds reached on this project's 2-core AMD EPYC are in
docs/BENCHMARKS.md, "Learning regression on more DM Control tasks"."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from reppo.bench.report import load_reference
from reppo.config import Config
from reppo.training import train

FRACTION_OF_PUBLISHED = 0.8


@dataclass(frozen=True)
class Case:
    task: str
    total_steps: int
    eval_every: int


# The embedded cpu preset (512 envs x 16 steps). Measured with these settings (median seed's best of its last two
# evaluations; published x 0.8 in brackets): CartpoleSwingup 852 [700] in 416 s, CartpoleBalanceSparse 1000 [792]
# in 249 s, 3 seeds in one program each.
CASES = [
    Case("CartpoleSwingup", total_steps=2_000_000, eval_every=250_000),
    Case("CartpoleBalanceSparse", total_steps=1_000_000, eval_every=125_000),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.task)
def test_reaches_80_percent_of_the_published_return(case, tmp_path):
    reference = load_reference()
    assert (case.task, "reppo") in reference, "../shared/reference/dmc_final_returns.csv is missing beside the checkout"
    threshold = FRACTION_OF_PUBLISHED * reference[(case.task, "reppo")].mean
    config = Config(env=case.task, num_seeds=3, total_steps=case.total_steps, eval_every=case.eval_every,
                    eval_envs=32, progress=False)  # fmt: skip
    result = train(config, run_dir=tmp_path / "run", echo=lambda *_: None)
    returns = np.array([[s["eval/episode_return"] for s in e["per_seed"]] for e in result.evaluations])  # (evals, 3)
    per_seed = returns[-2:].max(axis=0)
    assert np.median(per_seed) >= threshold, (threshold, returns.round(1).tolist())
