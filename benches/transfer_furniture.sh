#!/usr/bin/env bash
# Transfer benchmark on real shapes (issue #5): does DAPT on a backbone pre-trained here beat
# DAPT on a randomly initialised backbone at an equal fine-tuning budget?
#
# Data: the Sweet Home 3D furniture meshes (Debian package `sweethome3d-furniture`, 820
# artist-made OBJ models, 359 of them labelled in 17 coarse classes by
# ../shared/data/sweethome3d-furniture/labels.csv) and the ModelNet40 subset in ../shared/data.
# Nothing here is copied into the repository; the package is fetched into $WORK. Only the
# `dapt` binary and POSIX tools (awk, sed, sort) are used.
#
#   fine-tuning A  furniture, 17 classes: every 5th labelled model of each class (sorted by
#                  path) is held out for testing, the rest is the training split
#   fine-tuning B  ModelNet40 subset, 39 classes, its official train/test split
#   pre-training   every furniture model that is not a held-out test model of A (labelled or
#                  not) plus the ModelNet40 subset's training split; labels unused
#
# Both arms use the same model (the demo's small DAPT model), the same recipe, epochs and
# seeds; only `--init` differs. Reported: best and final held-out accuracy per seed, and the
# mean over seeds.
#
# Few-shot (SHOTS=K): both arms fine-tune on the same K labelled shapes per class (`dapt train
# --shots K`, drawn with the seed: every seed is a different draw); the test split is whole.
# The ModelNet40 subset has classes with fewer than 5 training shapes, so with SHOTS the
# default DATASETS is the furniture only.
#
#   PRE_EPOCHS (120: 30 was too little to transfer, see the README)  FT_EPOCHS (30)
#   SEEDS ("0 1 2")  SHOTS (unset: every training shape)
#   DATASETS ("furniture modelnet")  WORK (/tmp/dapt-furniture)
#   DAPT (target/debug/dapt; build it with `cargo build`)  BACKBONE (reuse a backbone file)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-$(cd .. && pwd)/shared/data}
WORK=${WORK:-/tmp/dapt-furniture}
PRE_EPOCHS=${PRE_EPOCHS:-120}
FT_EPOCHS=${FT_EPOCHS:-30}
SEEDS=${SEEDS:-"0 1 2"}
SHOTS=${SHOTS:-}
if [ -n "$SHOTS" ]; then DATASETS=${DATASETS:-furniture}; else DATASETS=${DATASETS:-"furniture modelnet"}; fi
DAPT=${DAPT:-target/debug/dapt}
[ -x "$DAPT" ] || { echo "no $DAPT: run \`cargo build\` first" >&2; exit 1; }
[ -f "$SHARED/sweethome3d-furniture/labels.csv" ] || { echo "no $SHARED/sweethome3d-furniture/labels.csv" >&2; exit 1; }
mkdir -p "$WORK"

# 1. the meshes, from the Debian package (120 MB)
if [ ! -d "$WORK/meshes/scopia" ]; then
    (cd "$WORK" && apt-get download sweethome3d-furniture >/dev/null)
    rm -rf "$WORK/pkg" && dpkg-deb -x "$WORK"/sweethome3d-furniture_*.deb "$WORK/pkg"
    mkdir -p "$WORK/meshes"
    for f in "$WORK"/pkg/usr/share/sweethome3d/furniture/*.sh3f; do
        (cd "$WORK/meshes" && unzip -q -o "$f")
    done
fi

# 2. the three data sets, as labels.csv folders (absolute paths). labels.csv quotes some of
# its middle fields (creators, names with commas): only the 2nd field (the model's path) and
# the last (its coarse class) are read, and neither contains a comma.
export LC_ALL=C   # byte-order sorting, so the held-out split never depends on the locale
mkdir -p "$WORK/finetune-furniture" "$WORK/pretrain"
awk -F, 'NR > 1 && $NF != "" { print $NF "," $2 }' "$SHARED/sweethome3d-furniture/labels.csv" |
    sort -t, -k1,1 -k2,2 |
    awk -F, -v meshes="$WORK/meshes" 'BEGIN { print "path,class,split" }
        { if ($1 != c) { c = $1; i = 0 }   # every 5th model of a class, by path, is held out
          print meshes "/" $2 "," $1 "," (i % 5 == 4 ? "test" : "train"); i++ }' \
    > "$WORK/finetune-furniture/labels.csv"
# pre-training pool: every furniture model that is not held out (labelled or not), then the
# ModelNet40 subset's training split; a fixed 5% is the held-out reconstruction split
awk -F, -v meshes="$WORK/meshes" -v mn="$SHARED/modelnet40-nrs3d-subset" '
    FILENAME ~ /finetune-furniture/ { if (FNR > 1 && $3 == "test") test[$1] = 1; next }
    FILENAME ~ /sweethome3d-furniture/ { if (FNR > 1 && !((meshes "/" $2) in test)) pool[n++] = meshes "/" $2; next }
    FNR > 1 && $3 == "train" { pool[n++] = mn "/" $1 }
    END { print "path,class,split"
          for (i = 0; i < n; i++) print pool[i] ",shape," (i % 20 == 19 ? "test" : "train") }' \
    "$WORK/finetune-furniture/labels.csv" "$SHARED/sweethome3d-furniture/labels.csv" \
    "$SHARED/modelnet40-nrs3d-subset/labels.csv" > "$WORK/pretrain/labels.csv"
ft=$WORK/finetune-furniture/labels.csv
echo "furniture: $(grep -c ',train$' "$ft") train / $(grep -c ',test$' "$ft") test in" \
    "$(tail -n +2 "$ft" | cut -d, -f2 | sort -u | wc -l) classes;" \
    "pre-training pool: $(( $(wc -l < "$WORK/pretrain/labels.csv") - 1 )) shapes"

# 3. pre-training (labels unused)
if [ -n "${BACKBONE:-}" ]; then
    backbone=$BACKBONE
else
    start=$(date +%s)
    rm -rf "$WORK/pretrain-run"
    "$DAPT" pretrain --data "folder:$WORK/pretrain" --epochs "$PRE_EPOCHS" --out "$WORK/pretrain-run" \
        --json > "$WORK/pretrain.jsonl"
    echo "pre-training: $PRE_EPOCHS epochs, $(( $(date +%s) - start )) s; summary:"
    tail -n 1 "$WORK/pretrain.jsonl"
    backbone=$WORK/pretrain-run/backbone.safetensors
fi

# 4. fine-tuning, both arms, every seed (runs in $WORK/ft<epochs>[-k<shots>])
RUNS=$WORK/ft$FT_EPOCHS${SHOTS:+-k$SHOTS}
shots=()
[ -n "$SHOTS" ] && shots=(--shots "$SHOTS")
mkdir -p "$RUNS"
# the held-out accuracies of a run, one per epoch, from its metrics.jsonl (the file `dapt
# train` writes: one JSON object per epoch and split, keys in a fixed order)
test_curve() {
    grep '"split":"test"' "$1/metrics.jsonl" | sed -n 's/.*"overall_accuracy":\([-0-9.eE+]*\).*/\1/p'
}
summarise() { # run dir -> "best final" in percent
    test_curve "$1" | awk '{ if ($1 > b) b = $1; l = $1 } END { printf "%.2f %.2f", 100 * b, 100 * l }'
}
for data in $DATASETS; do
    case $data in
        furniture) spec="folder:$WORK/finetune-furniture" ;;
        modelnet) spec="modelnet40:$SHARED/modelnet40-nrs3d-subset" ;;
    esac
    for arm in pretrained random; do
        for seed in $SEEDS; do
            out=$RUNS/$data-$arm-$seed
            init=()
            [ $arm = pretrained ] && init=(--init "$backbone")
            rm -rf "$out"
            start=$(date +%s)
            "$DAPT" train --data "$spec" "${init[@]}" --epochs "$FT_EPOCHS" --seed "$seed" \
                "${shots[@]}" --out "$out" --json > "$out.jsonl"
            echo "$data $arm seed $seed: best/final held-out accuracy $(summarise "$out") % ($(( $(date +%s) - start )) s)"
        done
    done
done | tee "$RUNS/results.txt"
# mean ± sd over seeds: best and final held-out accuracy, and the accuracy after 5, 10 and
# 20 epochs (pre-trained backbones start faster; the question is whether they end higher)
printf '%-9s %-10s %13s %13s %13s %13s %13s  seeds\n' data backbone best final "epoch 5" "epoch 10" "epoch 20"
for data in $DATASETS; do
    for arm in pretrained random; do
        for run in "$RUNS/$data-$arm-"*/; do
            [ -f "$run/metrics.jsonl" ] && test_curve "$run" | tr '\n' ' ' && echo
        done | awk -v data="$data" -v arm="$arm" '
            function cell(k,   m, v) { m = s[k] / n; v = n > 1 ? (q[k] - n * m * m) / (n - 1) : 0
                                      return sprintf("%5.1f ± %4.1f", 100 * m, 100 * sqrt(v > 0 ? v : 0)) }
            function add(k, x) { s[k] += x; q[k] += x * x }
            NF > 0 { n++; b = 0; for (i = 1; i <= NF; i++) if ($i > b) b = $i
                     add("best", b); add("final", $NF)
                     add(5, $(NF < 5 ? NF : 5)); add(10, $(NF < 10 ? NF : 10)); add(20, $(NF < 20 ? NF : 20)) }
            END { if (n) printf "%-9s %-10s %13s %13s %13s %13s %13s  %d\n", data, arm,
                      cell("best"), cell("final"), cell(5), cell(10), cell(20), n }'
    done
done
