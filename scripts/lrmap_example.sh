#!/usr/bin/env bash
# The README's normexp-lrmap example (about 15 min on 2 busy cores): the adaptive map with the range test,
# then the dense grid over the same cells, which reuses the map's runs and reports the search against it.
# The figures go to docs/img/lrmap/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/lrmap_example}
BIN=${BIN:-.venv/bin}
MAP=(model=mlp model.activation=relu data=mnist5k norm=none,batch data.batch_size=16,128 train.steps=300
     train.eval_every=0 train.log_every=10 --lr-min 0.001 --lr-max 10 --resolution 1.25 --points-per-decade 2
     --jobs 2 --out "$OUT")
"$BIN/normexp-lrmap" "${MAP[@]}" --range-test
"$BIN/normexp-lrmap" "${MAP[@]}" --dense
mkdir -p docs/img/lrmap
for f in lrmap_heatmap lrmap_loss_vs_lr range_test lrmap_dense_loss_vs_lr; do cp "$OUT/$f.png" docs/img/lrmap/; done
cp "$OUT/lrmap.csv" "$OUT/lrmap_search_vs_dense.csv" docs/img/lrmap/
