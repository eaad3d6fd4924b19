"""``reppo bench``: REPPO side by side with Brax PPO and Brax SAC on MuJoCo Playground tasks.

- :mod:`reppo.bench.suites`: the task suites (``cpu``, ``paper``) and their env-step budgets, as typed data.
- :mod:`reppo.bench.runners`: one run of one method (REPPO, or a Brax peer called through its library with
  Playground's published hyperparameters), its evaluation schedule and its compile-free wall-clock.
- :mod:`reppo.bench.worker`: ``python -m reppo.bench.worker SPEC.json``, the child process of one run.
- :mod:`reppo.bench.harness`: validates the request, runs each (task, method) in its own child process (peak host
  RSS from ``os.wait4``), records crashes and carries on, writes ``results.csv`` and ``runs.csv``.
- :mod:`reppo.bench.report`: the summary (final return with bootstrap interval, time to 90% of the best method,
  rliable's aggregates and probability of improvement over tasks and seeds, the published reference values, the
  targets), the curve plots and rliable's performance-profile and aggregate plots.
- :mod:`reppo.bench.evidence`: the GPU evidence kit behind ``scripts/gpu-evidence.sh``: REPPO at paper scale, T1
  and Brax PPO's throughput planned within a device-time budget, one small output folder.
"""
