#!/usr/bin/env bash
# The full profile's base-lr pilot (README, "Base lr"): the full setup's ResNet cells at N = 32 (BN, GN, LN)
# and N = 2 (BN, GN), seed 0, base lr 0.1 / 0.2 / 0.4 / 0.8 (lr = base x N / 32), every grid point run
# (normexp-lrmap --dense), the test set read once at the end. About 25 min on 2 cores (24.8 with the test
# suite running beside it).
# Writes one normexp-lrmap folder per cell under $OUT and the table the choice is read from:
# results/full/wuhe2018/lr_pilot/pilot.csv (final training loss and test error per cell and base lr).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/wuhe2018_lr_pilot}
BIN=${BIN:-.venv/bin}
FULL=(data=fashion_mnist optim=momentum schedule=cosine model=resnet_cifar model.depth=14 model.stem_stride=2
      model.zero_init_last=true profile=full data.train_subset=5000 data.test_subset=2000 train.epochs=20
      train.eval_every=0 train.progress=false train.threads=1)
pilot() {  # name, N, norm overrides...
  local name=$1 n=$2; shift 2
  "$BIN/normexp-lrmap" "${FULL[@]}" "$@" data.batch_size=$((8 * n)) train.log_every=$((160 / n)) \
    --dense --jobs 2 --resolution 2 --lr-min "$(python3 -c "print(0.1 * $n / 32)")" \
    --lr-max "$(python3 -c "print(0.8 * $n / 32)")" --out "$OUT/$name"
}
pilot bn_n32 32 norm=ghost_batch norm.virtual_devices=8
pilot gn_n32 32 norm=group norm.groups=4
pilot ln_n32 32 norm=layer
pilot bn_n2 2 norm=ghost_batch norm.virtual_devices=8
pilot gn_n2 2 norm=group norm.groups=4
"$BIN/python" - "$OUT" <<'PY'
import sys
from pathlib import Path
import pandas as pd
out = Path(sys.argv[1])
rows = []
for folder in sorted(p for p in out.iterdir() if (p / "lrmap_dense_points.csv").exists()):
    points = pd.read_csv(folder / "lrmap_dense_points.csv")
    n = 32 if folder.name.endswith("n32") else 2
    points["cell"] = folder.name
    points.insert(1, "base_lr", (points["lr"] * 32 / n).round(4))
    rows.append(points.drop(columns=["run_dir"]))
table = pd.concat(rows)
dest = Path("results/full/wuhe2018/lr_pilot")
dest.mkdir(parents=True, exist_ok=True)
table.to_csv(dest / "pilot.csv", index=False)
worst = table.groupby("base_lr")["train_loss"].max().rename("worst_train_loss")
print(table.to_string(index=False))
print(worst.to_string())
print(f"lowest worst final training loss: base lr {worst.idxmin()}")
PY
