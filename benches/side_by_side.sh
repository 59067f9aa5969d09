#!/usr/bin/env bash
# Side by side with the official PyTorch model, one sitting: for each mode, PyTorch's step then
# ours, alternating, PASSES times; prints ms per step, the ratio (PyTorch / ours, above 1 is
# faster) and both peaks. Both sides get two threads and the same glibc heap settings, and are
# compared by the median of their timed steps (bench_torch.py reports the median; ours is
# `ms_per_step_median`, with the mean and each step's time alongside).
#
#   benches/side_by_side.sh REFERENCE_DIR [PASSES]
#
# REFERENCE_DIR is what ../shared/tools/reference/setup.sh built (venv/, stubs/, DAPT/); our
# side is target/release/dapt (`cargo build --release` first). BENCHMARKS.md has the results.
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${1:?usage: benches/side_by_side.sh REFERENCE_DIR [PASSES]}
passes=${2:-2}
tool=${DAPT_SHARED_DIR:-../shared}/tools/reference/bench_torch.py
ours=$PWD/target/release/dapt
[ -x "$ours" ] || { echo "error: $ours is missing; run cargo build --release" >&2; exit 1; }
[ -f "$tool" ] || { echo "error: $tool is missing" >&2; exit 1; }
for pass in $(seq "$passes"); do
  for cfg in "infer modelnet40 1024" "dapt modelnet40 1024" "full modelnet40 1024" "dapt objbg 2048"; do
    read -r mode preset points <<<"$cfg"
    torch=$(cd "$ref" && MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_ARENA_MAX=1 OMP_NUM_THREADS=2 \
      PYTHONPATH=stubs:DAPT venv/bin/python "$tool" "$mode" 32 "$points" 3 2>/dev/null | tail -1)
    mine=$("$ours" bench --backend cpu --preset "$preset" --batch 32 --steps 3 --warmup 2 \
      --mode "$mode" --json 2>/dev/null)
    python3 - "$torch" "$mine" "$pass $preset $mode" <<'PY'
import json, sys
t, o = json.loads(sys.argv[1]), json.loads(sys.argv[2])
t_ms = next(v for k, v in t.items() if "ms" in k)
t_peak = next((v for k, v in t.items() if "mib" in k.lower() or "rss" in k.lower()), None)
# bench_torch.py reports the median of its timed steps: compare with ours (the mean too)
ours = o.get("ms_per_step_median") or o["ms_per_step"]
steps = ", ".join(f"{s:.0f}" for s in o.get("step_ms") or [])
print(f"pass {sys.argv[3]}: PyTorch {t_ms:.0f} ms, ours {ours:.0f} ms (mean {o['ms_per_step']:.0f}; "
      f"steps {steps}), ratio {t_ms / ours:.2f} (by means' {t_ms / o['ms_per_step']:.2f}); "
      f"peak PyTorch {t_peak} MiB, ours {o['peak_memory_mib']:.0f} MiB", flush=True)
PY
  done
done
