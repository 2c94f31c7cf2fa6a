#!/bin/bash
# Time to poses of the node's pipeline on a GPU machine, several "arms" in one command
# (docs/benchmarks.md, "Latency in the node", runs D-N): the ROS-free replay `vggt-ros eval
# --rate 1` of a 350x518 procedural drive at 20 Hz, window 8 / stride 4, one report per arm,
# then one summary line per arm (benchmarks/latency_summary.py).
#
#   FRAMES=240 ARMS="1b_on 1b_off c_on" BUDGET=500 OUT=/tmp/lat bash benchmarks/latency_arms.sh
#
# Arms: 1b_on / 1b_off = untrained VGGT-1B, bf16, torch.compile, every window forced through
# chaining (random weights otherwise fail its tests), pose refinement on / off; c_on / c_off = the
# embedded compact model at 518 px (every arm with loop closure off: the lent machines have no
# GTSAM, and its 35 MB wheel does not fit the carry beside the tree); 1b_on_tN = 1b_on with N
# refinement threads (refine.threads), 1b_on_sX = 1b_on with a GIL switch interval of X ms.
# An arm name ending in _old runs the package in the folder $OLD instead of this tree's, for a
# before/after pair in the same command (e.g. `mkdir -p gpujobs/old && git archive REV
# vggt_ros | tar -x -C gpujobs/old`, an ignored folder carried
# to the device, and OLD=$PWD/gpujobs/old). BUDGET (seconds since the start)
# stops starting new arms so that the command ends within the device's 10-minute limit.
# DEVICE (default cuda) and PYTHON (default python3) for a trial elsewhere.
set -u
HERE=$(cd "$(dirname "$0")/.." && pwd)
FRAMES=${FRAMES:-240}
ARMS=${ARMS:-"1b_on 1b_off"}
BUDGET=${BUDGET:-500}
OUT=${OUT:-/tmp/latency_arms}
OLD=${OLD:-}
PY=${PYTHON:-python3}
T0=$(date +%s)
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  lscpu | grep -E "Model name|^CPU\(s\)"
  $PY -c "import sys, cv2, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'opencv', cv2.__version__)"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"
BAG=$OUT/drive$FRAMES
[ -d "$BAG" ] || PYTHONPATH=$HERE:${PYTHONPATH:-} $PY -m vggt_ros.cli generate "$BAG" --scene procedural \
  --motion drive --fps 20 --seed 1000 --frames "$FRAMES" --height 350 --width 518 -q
echo "bag ready after $(($(date +%s) - T0)) s"
FORCE=(--param chaining.max_residual=1000 --param chaining.inlier_threshold=1000 --param chaining.min_inlier_ratio=0)
COMMON=(--gt none --depth-topic "" --device "${DEVICE:-cuda}" --rate 1 --window-size 8 --window-stride 4
  --param loop.enabled=false --no-plots -q)
ONEB=(--untrained --config vggt-1b --precision bf16 --backend torch "${FORCE[@]}")
for arm in $ARMS; do
  elapsed=$(($(date +%s) - T0))
  if [ "$elapsed" -gt "$BUDGET" ]; then echo "skipped $arm (budget spent: $elapsed s)"; continue; fi
  case $arm in *_old) package=$OLD ;; *) package=$HERE ;; esac
  if [ -z "$package" ] || [ ! -d "$package/vggt_ros" ]; then echo "$arm: set OLD to a folder holding vggt_ros/" >&2; exit 2; fi
  base=${arm%_old}
  case $base in
    1b_on) args=("${ONEB[@]}") ;;
    1b_off) args=("${ONEB[@]}" --param refine.enabled=false) ;;
    1b_on_t*) args=("${ONEB[@]}" --param "refine.threads=${base#1b_on_t}") ;;
    1b_on_s*) args=("${ONEB[@]}" --switch-interval-ms "${base#1b_on_s}") ;;
    c_on) args=(--size 518) ;;
    c_off) args=(--size 518 --param refine.enabled=false) ;;
    *) echo "unknown arm $arm" >&2; exit 2 ;;
  esac
  echo "== $arm (from $package, at $elapsed s)"
  (cd /tmp && PYTHONPATH=$package:${PYTHONPATH:-} timeout 400 $PY -m vggt_ros.cli eval "$BAG" \
    --out "$OUT/$arm" "${COMMON[@]}" "${args[@]}") 2>&1 | grep -v Warning | tail -5
done
PYTHONPATH=$HERE:${PYTHONPATH:-} $PY "$HERE/benchmarks/latency_summary.py" "$OUT"
