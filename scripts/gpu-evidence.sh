#!/usr/bin/env bash
# GPU evidence kit: REPPO at paper scale within one device-time budget, everything included (unpacking the carried
# bundle, compilation, runs, the summary). In order of value, as far as the budget goes (src/reppo/bench/evidence.py
# plans it from the GPU figures in docs/BENCHMARKS.md and skips what would not fit):
#   1. dmc: REPPO paper-small, 20M env steps, on CartpoleSwingup (2 seeds in one program: cheapest physics, PPO far
#      behind), CheetahRun and WalkerRun (PPO far behind: 456 and 471 against REPPO's published 930 and 901);
#   2. t1: T1JoystickFlatTerrain at the paper's humanoid settings, when the booster_t1 robot model is there;
#   3. throughput: Brax PPO at Playground's published settings on the same GPU (REPPO's from its dmc runs);
#   4. extra: CartpoleBalance with the time left.
# The output folder holds results.csv, runs.csv, summary.md (next to the published returns), curves.png,
# throughput.png and log.txt: 6 files, what the device returns (at most 8). It is rewritten after every run, so it
# is well-formed whenever the kit stops.
#
#   bash scripts/gpu-evidence.sh [--budget-min 12] [--out DIR] [--work DIR] [--bundle DIR] [--tiny]
#
# --budget-min  device minutes for everything (default 12; 10 with --tiny, a time limit there)
# --out         output folder (default $OUT/gpu-evidence when $OUT is set, else bench/gpu-evidence__<time>)
# --work        run folders, checkpoints, TensorBoard (default a new folder under ${TMPDIR:-/tmp})
# --bundle      wheels, reference returns and robot models built by scripts/build-gpu-bundle.sh (default
#               .gpu-bundle); its wheels are installed only when this Python lacks playground or brax
# --tiny        the same path at CPU size, 1-2 minutes on a quiet 2-core CPU: a check of the kit, not evidence
#
# On a lent GPU (the device tool runs one command for at most 10 minutes, so --budget-min 9 there):
#   run(command="REPPO_COMMIT=<hash> bash scripts/gpu-evidence.sh --budget-min 9", carry=[".gpu-bundle"],
#       timeout_s=600)
#
# The commit is $REPPO_COMMIT, else git's, else the one the bundle was built from.
set -euo pipefail

started=$(date +%s.%N)
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"

fail() {
  echo "gpu-evidence: error: $1" >&2
  exit 2
}
value() { # the value of flag $1, which must be there and not be another flag
  [ $# -ge 2 ] && [[ "$2" != --* ]] || fail "$1 needs a value"
}

budget="" out="" work="" bundle="$repo/.gpu-bundle" profile="gpu"
while [ $# -gt 0 ]; do
  case "$1" in
    --budget-min) value "$@"; budget="$2"; shift 2 ;;
    --out) value "$@"; out="$2"; shift 2 ;;
    --work) value "$@"; work="$2"; shift 2 ;;
    --bundle) value "$@"; bundle="$2"; shift 2 ;;
    --tiny) profile="tiny"; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown argument '$1'; allowed: --budget-min MINUTES, --out DIR, --work DIR, --bundle DIR, --tiny" ;;
  esac
done
if [ -z "$budget" ]; then
  if [ "$profile" = "tiny" ]; then budget=10; else budget=12; fi
fi
[[ "$budget" =~ ^[0-9]+([.][0-9]+)?$ ]] && awk -v b="$budget" 'BEGIN { exit !(b > 0) }' ||
  fail "--budget-min '$budget' must be a positive number of minutes"
stamp="$(date +%Y%m%d-%H%M%S)"
if [ -z "$out" ]; then
  if [ -n "${OUT:-}" ]; then out="$OUT/gpu-evidence"; else out="$repo/bench/gpu-evidence__$stamp"; fi
fi
[ -z "$work" ] && work="${TMPDIR:-/tmp}/gpu-evidence-work__$stamp-$$"
[ -e "$out/results.csv" ] && fail "--out '$out' already holds results; allowed: a new or empty folder"
[ -e "$work/events.jsonl" ] && fail "--work '$work' already holds a kit run; allowed: a new or empty folder"
mkdir -p "$out" "$work"
log="$out/log.txt"
say() { echo "gpu-evidence: $*" | tee -a "$log"; }

# 1. What the device lacks: the bundle's wheels, installed outside the image's environment.
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
unpack_start=$(date +%s.%N)
if ! "$python" -c "import mujoco_playground, brax" 2>/dev/null; then
  [ -d "$bundle/wheels" ] || fail "this Python lacks playground/brax and there is no bundle at $bundle (build it: bash scripts/build-gpu-bundle.sh)"
  site="${TMPDIR:-/tmp}/reppo-gpu-site"
  say "installing $(ls "$bundle"/wheels/*.whl | wc -l) wheels from $bundle/wheels into $site"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$bundle"/wheels/*.whl 2>&1 | tee -a "$log" || say "installing the wheels failed: the runs will fail, the summary says so"
  export PYTHONPATH="$repo/src:$site${PYTHONPATH#"$repo/src"}"
fi
if [ -z "${REPPO_MENAGERIE_PATH:-}" ] && [ -d "$bundle/menagerie" ]; then
  export REPPO_MENAGERIE_PATH="$bundle/menagerie"  # read by the bench worker (reppo.bench.worker)
fi
unpack_s=$(awk -v a="$unpack_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

reference=()
[ -f "$bundle/reference/dmc_final_returns.csv" ] && reference=(--reference "$bundle/reference/dmc_final_returns.csv")
commit="${REPPO_COMMIT:-}"
[ -z "$commit" ] && commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || true)"
[ -z "$commit" ] && [ -f "$bundle/COMMIT" ] && commit="$(cat "$bundle/COMMIT") (the bundle's)"

# 2. The phases, under a time limit that leaves room for the summary (each run has its own limit inside).
left=$(awk -v s="$started" -v b="$budget" -v now="$(date +%s.%N)" 'BEGIN { printf "%d", s + 60 * b - now - 10 }')
[ "$left" -gt 0 ] || left=1
status=0
timeout --kill-after=5 "$left" "$python" -m reppo.bench.evidence run --profile "$profile" --out "$out" \
  --work "$work" --budget-min "$budget" --started "$started" --unpack-s "$unpack_s" --commit "${commit:-unknown}" \
  "${reference[@]}" 2>&1 | tee -a "$log" || status=$?

# 3. Always: the output folder from whatever ran, also after a failure or when the time ran out.
"$python" -m reppo.bench.evidence finalize --out "$out" --work "$work" 2>&1 | tee -a "$log" ||
  { [ "$status" -ne 0 ] || status=1; }
say "run folders in $work; used $(awk -v s="$started" -v now="$(date +%s.%N)" 'BEGIN { printf "%.0f", now - s }') s of $budget min"
exit "$status"
