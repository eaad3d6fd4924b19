"""Benchmark suites: which tasks, with which env-step budget, and which REPPO preset.

``paper``: the 23 DM Control tasks of the REPPO paper (the tasks of ``../shared/reference/dmc_final_returns.csv``
without the four G1/T1 joystick tasks) at the paper's 50M env steps, REPPO at its ``paper-small`` preset. For a
GPU machine.

``cpu``: five tasks, REPPO at its ``cpu`` preset, with budgets sized so that the whole suite at 3 seeds finishes
in about 2 hours on a 2-core CPU. Measured on this project's 2-core AMD EPYC machine (no GPU) at 40,960 env
steps (Brax, one seed) and 81,920 env steps (REPPO, 3 seeds in one program), while another job shared the machine
(load average 2-4):

==================  =============  ===========  =====================  ==================  =================
task                REPPO x3 /s    SAC /s       REPPO fixed s (x1)     SAC fixed s (x3)    PPO run s (x3)
==================  =============  ===========  =====================  ==================  =================
CartpoleBalance     2,500          900          91                     42                  14
PendulumSwingup     4,550          1,750        65                     45                  44
ReacherEasy         2,960          1,620        83                     69                  32
CheetahRun          1,120          830          265                    196                 110
FingerSpin          1,140          810          149                    243                 73
==================  =============  ===========  =====================  ==================  =================

Rates are env steps per second per seed between the first and the last evaluation, compile excluded (REPPO:
its 3-seed program, its evaluations included; SAC: after the replay prefill, its evaluations excluded). "Fixed"
is a process's seconds outside that: start-up, compilation, Brax's ten 128-episode evaluations.
Published Brax PPO makes its first update after 983,040 env steps (on CartpoleBalance that one update took 365 s,
its compilation included) and evaluates every 9,830,400, so in the cpu suite it runs to its initial evaluation.

Arithmetic: fixed cost = sum over tasks of REPPO fixed + 3 x (SAC fixed + PPO run) = 3,251 s. Per budget env step
a task costs 1 / REPPO rate + 3 / SAC rate seconds (CartpoleBalance 0.00373, PendulumSwingup 0.00193, ReacherEasy
0.00219, CheetahRun 0.00451, FingerSpin 0.00458). The remaining 3,949 s of 2 hours are split equally, 790 s of
training per task, and each budget is 790 s / cost rounded to a multiple of 40,960 (five REPPO iterations):
training 3,853 s, total 7,104 s = 1.97 h (less when the compile cache is warm, as it is for Brax's seeds 2 and 3).
Measured on a quiet machine: the whole suite took 81 minutes (REPPO with 128 envs and 4 epochs); with the
current settings (``CPU_REPPO_OVERRIDES``, ``CPU_LONG_BUDGET_REPPO_OVERRIDES``, 128-episode evaluations) REPPO's
five 3-seed processes take 31 minutes and the whole suite 95."""

from __future__ import annotations

from dataclasses import dataclass, field

METHODS: tuple[str, ...] = ("reppo", "ppo", "ppo_small", "sac")
"""Methods of the benchmark: REPPO (this package), Brax PPO (published settings), Brax PPO with REPPO's cpu batch
geometry (``PPO_SMALL_OVERRIDES``), Brax SAC."""

METHOD_NAMES: dict[str, str] = {"reppo": "REPPO", "ppo": "Brax PPO", "ppo_small": "Brax PPO small", "sac": "Brax SAC"}

PPO_SMALL_OVERRIDES: dict[str, object] = {
    "num_envs": 128, "unroll_length": 16, "batch_size": 16, "num_minibatches": 8, "num_updates_per_batch": 8,
    "num_resets_per_eval": 0,
}  # fmt: skip
"""Brax PPO ``ppo_small``: Playground's published DM Control config (``brax_ppo_config``) with the batch geometry of
REPPO in the cpu suite (``CPU_REPPO_OVERRIDES``). Published PPO collects 1024 x 32 trajectories of 30 steps per update
(983,040 env steps) and so never updates within a cpu budget. Here:

- 128 envs stepping 16-step unrolls (REPPO: 128 envs x T = 16): one update per 2,048 env steps, 80-200 updates in
  the cpu budgets;
- ``batch_size`` 16 x ``num_minibatches`` 8 = 128 trajectories = one unroll of every env (Brax needs ``batch_size *
  num_minibatches`` divisible by ``num_envs``), so 8 minibatches of 256 env steps, as REPPO's 8 x 256;
- 8 passes over each batch (``num_updates_per_batch``; REPPO's 8 epochs; published 16): 64 gradient steps per
  2,048 env steps, as REPPO;
- ``num_resets_per_eval`` 0 (published 10): Brax resets every env after each ``num_resets_per_eval``-th of the
  updates between evaluations, which with 16-step unrolls and ~10 updates per evaluation would cut every 1,000-step
  episode after 16-32 steps; episodes end by Playground's time limit instead.

Everything else is published: learning rate 1e-3, entropy cost 0.01, discount 0.995, reward scaling 10, clipping,
GAE, observation normalisation, the default networks (policy 4 x 32, value 5 x 256), 128 evaluation episodes."""

EVAL_POINTS = 10
"""Evaluations per run after the start (each method's schedule is rounded to what its library can do)."""


@dataclass(frozen=True)
class TaskBudget:
    """One task of a suite and its training budget in environment steps (the same for every method)."""

    task: str
    env_steps: int
    reppo_overrides: dict[str, object] = field(default_factory=dict)
    """Config fields REPPO runs with on this task, on top of the suite's (the peers' published configs are per
    task too)."""


@dataclass(frozen=True)
class Suite:
    """A named list of tasks with budgets, and the REPPO preset the suite runs."""

    name: str
    tasks: tuple[TaskBudget, ...]
    reppo_preset: str
    description: str
    reppo_overrides: dict[str, object] = field(default_factory=dict)
    """Config fields REPPO runs with on top of ``reppo_preset``."""

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.task for t in self.tasks)

    def budget(self, task: str) -> int:
        return next(t.env_steps for t in self.tasks if t.task == task)

    def reppo_overrides_for(self, task: str) -> dict[str, object]:
        """REPPO's config fields on ``task``: the suite's overrides, then the task's own (none for a task outside
        the suite, which a hand-made plan may hold)."""
        own = next((t.reppo_overrides for t in self.tasks if t.task == task), {})
        return {**self.reppo_overrides, **own}


PAPER_TASKS: tuple[str, ...] = (
    "AcrobotSwingup", "AcrobotSwingupSparse", "BallInCup", "CartpoleBalance", "CartpoleBalanceSparse",
    "CartpoleSwingup", "CartpoleSwingupSparse", "CheetahRun", "FingerSpin", "FingerTurnEasy", "FingerTurnHard",
    "FishSwim", "HopperHop", "HopperStand", "HumanoidRun", "HumanoidStand", "HumanoidWalk", "PendulumSwingup",
    "ReacherEasy", "ReacherHard", "WalkerRun", "WalkerStand", "WalkerWalk",
)  # fmt: skip
"""The 23 DM Control tasks of the REPPO paper (MuJoCo Playground ids)."""

PAPER_BUDGET = 50_000_000

CPU_BUDGETS: dict[str, int] = {
    "CartpoleBalance": 204_800,
    "PendulumSwingup": 409_600,
    "ReacherEasy": 368_640,
    "CheetahRun": 163_840,
    "FingerSpin": 163_840,
}
"""cpu-suite budgets (env steps per run and seed); see the module docstring for how they were chosen."""

BRAX_EVAL_EPISODES = 128
"""Deterministic evaluation episodes of Brax PPO and SAC (``num_eval_envs``, Brax's default, which the published
configs keep). REPPO evaluates as many in every suite (its ``eval_envs``; 16 by default outside the bench)."""

CPU_REPPO_OVERRIDES: dict[str, object] = {
    "num_envs": 128, "num_epochs": 8, "entropy_coef": 1.0, "eval_envs": BRAX_EVAL_EPISODES,
}  # fmt: skip
"""REPPO in the cpu suite: the cpu preset with 128 envs instead of 512 (2,048 env steps per iteration), 8 epochs
instead of 4, and target entropy -1.0 x action_dim instead of -0.5 x action_dim (SAC's usual target); 128
evaluation episodes like Brax.

The budgets are 20-50 iterations of 512 envs, too few updates to learn from: one seed of CartpoleBalance scored
191 at 204,800 env steps with 512 envs and 994 with 128 (same wall-clock, 77-80 s). Brax SAC collects with 128
envs too. The epochs and the entropy target were chosen from 3-seed probes at the suite's budgets (final return
mean over seeds / mean of the last three evaluations; ``docs/BENCHMARKS.md``, "cpu-suite settings"):

=======================================  ==================  ==================
setting (on top of 128 envs)             ReacherEasy         CartpoleBalance
=======================================  ==================  ==================
4 epochs (the suite run of session 4)    464 / 506           688 / 523
64 envs                                  378 / 409
8 epochs                                 484 / 617           404 / 604
entropy_coef 1.0                         426 / 474
8 epochs, entropy_coef 1.0               697 / 755           737 / 768
8 epochs, critic_lr 1e-3                 736 / 684
8 epochs, entropy_coef 1.0, critic 1e-3  762 / 639           425 / 373
=======================================  ==================  ==================

With the cpu preset's 0.5, the policy keeps a pre-tanh std near 1 on ReacherEasy, and the deterministic policy
tanh(mu) that is evaluated swings from one evaluation to the next."""

CPU_LONG_BUDGET_REPPO_OVERRIDES: dict[str, object] = {"num_envs": 256, "num_minibatches": 16, "num_epochs": 16}
"""REPPO on the two cpu tasks with the longest budgets, PendulumSwingup and ReacherEasy: twice the envs (4,096 env
steps and 90-100 iterations in the budget) and twice the epochs, so twice the updates (23,040 on ReacherEasy, as many
as Brax SAC's 8 per env step) of the same 256-sample minibatches. 3-seed probes, 128 evaluation episodes (final
return mean / mean of the last three evaluations; ``docs/BENCHMARKS.md``, "cpu-suite settings"):

==============================================  ==================  ==================  ==================
setting (on top of the suite's)                 ReacherEasy         PendulumSwingup     CartpoleBalance
==============================================  ==================  ==================  ==================
the suite's: 128 envs, 8 minibatches, 8 epochs  662 / 690           0.5 / 0.9           997 / 728
kl_bound 0.03                                   652 / 694
256 envs, 8 steps (the same batch)              556 / 541
256 envs, 16 minibatches                        735 / 706
128 envs, 16 epochs                             717 / 679
256 envs, 16 minibatches, 16 epochs             818 / 751           272 / 212           733 / 548
512 envs, 32 minibatches, 16 epochs             731 / 722
256 envs, 16 minibatches, 32 epochs             672 / 733
==============================================  ==================  ==================  ==================

The suite's row is its run before this change (``docs/bench/cpu`` of session 6). The shorter budgets leave too few
iterations of 256 envs (50 on CartpoleBalance, 40 on CheetahRun and FingerSpin), so the other tasks keep the
suite's settings."""

CPU_TASK_REPPO_OVERRIDES: dict[str, dict[str, object]] = {
    "PendulumSwingup": CPU_LONG_BUDGET_REPPO_OVERRIDES, "ReacherEasy": CPU_LONG_BUDGET_REPPO_OVERRIDES,
}  # fmt: skip
"""REPPO's own settings per cpu task, on top of ``CPU_REPPO_OVERRIDES`` (tasks not named keep the suite's)."""

SUITES: dict[str, Suite] = {
    "cpu": Suite(
        name="cpu",
        tasks=tuple(
            TaskBudget(task, steps, CPU_TASK_REPPO_OVERRIDES.get(task, {})) for task, steps in CPU_BUDGETS.items()
        ),
        reppo_preset="cpu",
        reppo_overrides=CPU_REPPO_OVERRIDES,
        description="5 DM Control tasks, budgets for about 2 hours at 3 seeds on a 2-core CPU",
    ),
    "paper": Suite(
        name="paper",
        tasks=tuple(TaskBudget(task, PAPER_BUDGET) for task in PAPER_TASKS),
        reppo_preset="paper-small",
        reppo_overrides={"eval_envs": BRAX_EVAL_EPISODES},
        description="the 23 DM Control tasks of the REPPO paper at 50M env steps (for a GPU)",
    ),
}
