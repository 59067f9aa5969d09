#!/usr/bin/env bash
# The GPU benchmark: DAPT training, full fine-tuning and inference on the wgpu backend at the
# official ModelNet40 and ScanObjectNN OBJ_BG configurations, batch 32 and 128, one JSON line
# each (`dapt bench --json`: ms_per_step, samples_per_s, device_memory_mib, host_reads_per_step,
# grouping). Run it on a machine with a GPU; write the figures in BENCHMARKS.md.
#
#   benches/gpu.sh                      # builds the release binary first if needed
#   DAPT_BIN=/path/to/dapt benches/gpu.sh   # a binary built elsewhere (no registry access)
#
# The twelve runs took 167 s on an H200 (BENCHMARKS.md, "On a GPU"); each is capped by
# DAPT_BENCH_TIMEOUT seconds (default 120) so one slow case cannot eat the budget. The official
# PyTorch model on the same cases, same card: benches/torch_cuda/bench.py. A build with
# `--features gpu-autotune` honours CUBECL_AUTOTUNE_LEVEL (set below); the default build ignores
# it.
set -uo pipefail
cd "$(dirname "$0")/.."

bin=${DAPT_BIN:-target/release/dapt}
if [ ! -x "$bin" ]; then
  echo "building $bin (release)" >&2
  cargo build --release --locked --bin dapt >&2 || exit 1
fi
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-balanced}
limit=${DAPT_BENCH_TIMEOUT:-120}
steps=${DAPT_BENCH_STEPS:-10}

status=0
for preset in modelnet40 objbg; do
  for batch in 32 128; do
    for mode in dapt full infer; do
      if ! timeout "$limit" "$bin" bench --backend wgpu --preset "$preset" --mode "$mode" \
        --batch "$batch" --steps "$steps" --warmup 2 --json; then
        echo "{\"preset\":\"$preset\",\"mode\":\"$mode\",\"batch\":$batch,\"error\":\"failed or timed out after ${limit}s\"}"
        status=1
      fi
    done
  done
done
exit $status
