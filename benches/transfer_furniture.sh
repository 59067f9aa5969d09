#!/usr/bin/env bash
# Transfer benchmark on real shapes (issue #5): does DAPT on a backbone pre-trained here beat
# DAPT on a randomly initialised backbone at an equal fine-tuning budget?
#
# Data: the Sweet Home 3D furniture meshes (Debian package `sweethome3d-furniture`, 820
# artist-made OBJ models, 359 of them labelled in 17 coarse classes by
# ../shared/data/sweethome3d-furniture/labels.csv) and the ModelNet40 subset in ../shared/data.
# Nothing here is copied into the repository; the package is fetched into $WORK.
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

# 2. the three data sets, as labels.csv folders (absolute paths)
python3 - "$SHARED" "$WORK" <<'EOF'
import csv, os, sys
shared, work = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(f"{shared}/sweethome3d-furniture/labels.csv", newline="")))
by_class = {}
for r in rows:
    if r["coarse_class"]:
        by_class.setdefault(r["coarse_class"], []).append(r["model_path_in_pack"])
test = set()
for paths in by_class.values():
    for i, p in enumerate(sorted(paths)):
        if i % 5 == 4:
            test.add(p)
mesh = lambda p: os.path.join(work, "meshes", p)
def write(name, items):
    os.makedirs(f"{work}/{name}", exist_ok=True)
    with open(f"{work}/{name}/labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "class", "split"])
        w.writerows(items)
write("finetune-furniture", [(mesh(p), c, "test" if p in test else "train")
                             for c, ps in sorted(by_class.items()) for p in sorted(ps)])
mn = f"{shared}/modelnet40-nrs3d-subset"
mn_train = [r["path"] for r in csv.DictReader(open(f"{mn}/labels.csv", newline=""))
            if r["official_split"] == "train"]
pool = [mesh(r["model_path_in_pack"]) for r in rows if r["model_path_in_pack"] not in test]
pool += [os.path.join(mn, p) for p in mn_train]
# a fixed 5% of the pool is the held-out reconstruction split
write("pretrain", [(p, "shape", "test" if i % 20 == 19 else "train") for i, p in enumerate(pool)])
print(f"furniture: {sum(map(len, by_class.values())) - len(test)} train / {len(test)} test "
      f"in {len(by_class)} classes; pre-training pool: {len(pool)} shapes")
EOF

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
summarise() { # run.jsonl -> "best final"
    python3 -c 'import json,sys
s=[json.loads(l) for l in open(sys.argv[1]) if "\"summary\"" in l][-1]["summary"]
print("%.2f %.2f" % (100*s["best_overall_accuracy"], 100*(s["last"] or {}).get("overall_accuracy", 0)))' "$1"
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
            echo "$data $arm seed $seed: best/final held-out accuracy $(summarise "$out.jsonl") % ($(( $(date +%s) - start )) s)"
        done
    done
done | tee "$RUNS/results.txt"
# mean ± sd over seeds: best and final held-out accuracy, and the accuracy after 5, 10 and
# 20 epochs (pre-trained backbones start faster; the question is whether they end higher)
python3 - "$RUNS" <<'EOF'
import glob, json, os, statistics as st, sys
res = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*-*-*.jsonl"))):
    data, arm, seed = os.path.basename(f)[:-6].rsplit("-", 2)
    lines = [json.loads(l) for l in open(f) if l.strip()]
    test = [l["metrics"]["overall_accuracy"] for l in lines
            if l.get("event") == "metrics" and l["metrics"]["split"] == "test"]
    if test:
        res.setdefault((data, arm), []).append(test)
sd = lambda x: st.stdev(x) if len(x) > 1 else 0.0
cell = lambda x: f"{100 * st.mean(x):5.1f} ± {100 * sd(x):4.1f}"
print(f"{'data':9} {'backbone':10} {'best':>13} {'final':>13} {'epoch 5':>13} {'epoch 10':>13} {'epoch 20':>13}  seeds")
for (data, arm), curves in sorted(res.items()):
    at = lambda e: [c[min(e, len(c)) - 1] for c in curves]
    print(f"{data:9} {arm:10} {cell([max(c) for c in curves]):>13} {cell([c[-1] for c in curves]):>13} "
          f"{cell(at(5)):>13} {cell(at(10)):>13} {cell(at(20)):>13}  {len(curves)}")
EOF
