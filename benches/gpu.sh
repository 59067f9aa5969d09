#!/usr/bin/env bash
# The GPU benchmark, everything one short lease of a GPU machine should bring back:
#
# 1. DAPT training, full fine-tuning and inference on the wgpu backend at the official
#    ModelNet40 and ScanObjectNN OBJ_BG configurations, batch 32 and 128, one JSON line each
#    (`dapt bench --json`: ms_per_step, samples_per_s, device_memory_mib, host_reads_per_step,
#    grouping, kernel launches);
# 2. the phase split (forward, backward, optimizer) of a DAPT and a full fine-tuning step at
#    ModelNet40, batch 128 (DAPT_PHASE_TIMES), one JSON line each;
# 3. CubeCL's per-kernel profile of the same two steps, the top of each table written to
#    $out/profile-dapt.txt and $out/profile-full.txt;
# 4. with DAPT_REFERENCE set to the official DAPT source tree and a python3 whose torch sees a
#    CUDA device: the official PyTorch model on the twelve cases of (1), same card
#    (benches/torch_cuda/bench.py), one JSON line each.
#
#   benches/gpu.sh                          # builds the release binary first if needed
#   DAPT_BIN=/path/to/dapt benches/gpu.sh   # a binary built elsewhere (no registry access)
#
# JSON lines go to stdout and to $out (DAPT_GPU_OUT, default target/gpu-bench). On an H200 (1)
# took 167 s and (4) 40 s (BENCHMARKS.md, "On a GPU"); each run is capped by DAPT_BENCH_TIMEOUT
# seconds (default 120). A build with `--features gpu-autotune` honours CUBECL_AUTOTUNE_LEVEL
# (set below); the default build ignores it. Write the figures in BENCHMARKS.md.
#
# A dry run on a machine without a GPU (lavapipe), to check the script before a lease:
#   DAPT_GPU_BATCHES=2 DAPT_GPU_EXTRA="--points 256" DAPT_BENCH_STEPS=1 benches/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bin=${DAPT_BIN:-target/release/dapt}
if [ ! -x "$bin" ]; then
  echo "building $bin (release)" >&2
  cargo build --release --locked --bin dapt >&2 || exit 1
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-balanced}
limit=${DAPT_BENCH_TIMEOUT:-120}
steps=${DAPT_BENCH_STEPS:-10}
batches=${DAPT_GPU_BATCHES:-32 128}
read -r -a extra <<<"${DAPT_GPU_EXTRA:-}"
big=${batches##* } # the phase split and the profile run at the largest batch
out=${DAPT_GPU_OUT:-target/gpu-bench}
mkdir -p "$out"
out=$(cd "$out" && pwd)

status=0
bench() { # bench PRESET MODE BATCH [extra args]: one JSON line, or an error line
  local preset=$1 mode=$2 batch=$3
  shift 3
  if ! timeout "$limit" "$bin" bench --backend wgpu --preset "$preset" --mode "$mode" \
    --batch "$batch" --steps "$steps" --warmup 2 --json "${extra[@]}" "$@"; then
    echo "{\"preset\":\"$preset\",\"mode\":\"$mode\",\"batch\":$batch,\"error\":\"failed or timed out after ${limit}s\"}"
    status=1
  fi
}

for preset in modelnet40 objbg; do
  for batch in $batches; do
    for mode in dapt full infer; do
      bench "$preset" "$mode" "$batch"
    done
  done
done | tee "$out/wgpu.jsonl"

for mode in dapt full; do
  DAPT_PHASE_TIMES=1 bench modelnet40 "$mode" "$big"
done | tee "$out/phases.jsonl"

# CubeCL reads cubecl.toml from the working directory: time every kernel, print the table
profile_dir=$(mktemp -d)
printf '[profiling.logger]\nlevel = "basic"\nstderr = true\n' >"$profile_dir/cubecl.toml"
for mode in dapt full; do
  (cd "$profile_dir" && timeout "$limit" "$bin" bench --backend wgpu --preset modelnet40 \
    --mode "$mode" --batch "$big" --steps 2 --warmup 1 --json "${extra[@]}" \
    2>"$profile_dir/$mode.log" >/dev/null)
  # the summary's header and rows (the rows end with a count and a share), the longest first;
  # a matmul's name shortened to its tiling
  grep -E '^\| Name|^\| .*\| +[0-9]+ +\| +[0-9]+ %' "$profile_dir/$mode.log" | head -41 \
    | sed -E 's/^\| MatmulEntry \|.*\| ([A-Za-z]+Matmul_[0-9a-f]+) +\|/| Matmul \1 |/; s/ {2,}/ /g' \
    >"$out/profile-$mode.txt"
  rows=$(($(wc -l <"$out/profile-$mode.txt") - 1))
  echo "per-kernel profile of a $mode step: $out/profile-$mode.txt ($rows kernels)" >&2
done
rm -rf "$profile_dir"

if [ -n "${DAPT_REFERENCE:-}" ]; then
  if python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    (cd "$DAPT_REFERENCE" && PYTHONPATH=. timeout $((limit * 3)) python3 \
      "$root/benches/torch_cuda/bench.py" "$steps") | tee "$out/pytorch.jsonl" || status=1
  else
    echo "DAPT_REFERENCE is set but python3's torch sees no CUDA device: PyTorch side skipped" >&2
    status=1
  fi
fi
grep -qs '"error"' "$out"/*.jsonl && status=1
exit $status
