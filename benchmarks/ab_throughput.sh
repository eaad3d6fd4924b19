#!/usr/bin/env bash
# Throughput of two commits, back to back on this machine: benchmarks/throughput.py of each commit in its own
# worktree, alternating which goes first each round, one JSON line per run.
#
#   bash benchmarks/ab_throughput.sh BEFORE AFTER [ROUNDS] [TASKS...]
#   bash benchmarks/ab_throughput.sh f6a834c 8ef32a1 2 CartpoleBalance CheetahRun
#
# Output folder: ab-BEFORE-AFTER/ (worktrees, logs, before.jsonl, after.jsonl, a table at the end). Each commit
# keeps its own persistent compilation cache, so from the second round on the compile figure is a cache load.
set -euo pipefail
before=$1 after=$2 rounds=${3:-2}
shift $(( $# < 3 ? $# : 3 ))
tasks=("$@")
if [ ${#tasks[@]} -eq 0 ]; then tasks=(CartpoleBalance CheetahRun); fi
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
out=$PWD/ab-$before-$after
mkdir -p "$out"
for v in before after; do
  [ -d "$out/$v" ] || git -C "$repo" worktree add -q --detach "$out/$v" "${!v}"
done
for ((r = 1; r <= rounds; r++)); do
  for task in "${tasks[@]}"; do
    if (( r % 2 )); then order="before after"; else order="after before"; fi
    for v in $order; do
      JAX_COMPILATION_CACHE_DIR=$out/cache-$v PYTHONPATH=$out/$v/src \
        python "$out/$v/benchmarks/throughput.py" --env "$task" --preset cpu --repeats 8 \
        --json "$out/$v.jsonl" > "$out/$v-$task-$r.log" 2>&1
      echo "$(date +%T) round $r $task $v done"
    done
  done
done
python - "$out" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = {v: [json.loads(line) for line in (out / f"{v}.jsonl").read_text().splitlines()] for v in ("before", "after")}
print("| task | before: env steps/s per round | after | after / before (mean of rounds) |")
print("|---|---|---|---|")
for task in dict.fromkeys(r["env"] for r in rows["before"]):
    b = [r["sps"] for r in rows["before"] if r["env"] == task]
    a = [r["sps"] for r in rows["after"] if r["env"] == task]
    ratio = statistics.mean(a) / statistics.mean(b)
    print(f"| {task} | {', '.join(f'{x:,.0f}' for x in b)} | {', '.join(f'{x:,.0f}' for x in a)} | {ratio:.3f} |")
PY
