#!/usr/bin/env bash
# The CUDA path, on a machine with a GPU and no network: the full profile's WH-1 cells (Wu & He, BN and GN at
# N = 32..2 and plain BN, 3 seeds; device=auto picks the GPU) through normexp-reproduce, then the norm-cost
# benchmark on the GPU (normexp-bench --only norms --device cuda). Everything it writes goes to $OUT (default
# ./gpu_check): the GPU's name, both logs, the WH-1 claims.json and run table, the benchmark's table.
#
# The machine needs torch and pandas; hydra-core, omegaconf and antlr4 (pure Python) may come in a folder on
# PYTHONPATH (GPU_SITE), and the Fashion-MNIST IDX files under data/FashionMNIST/raw.
#     OUT=/tmp/gpu GPU_SITE=.gpu_site bash scripts/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="${GPU_SITE:+$PWD/$GPU_SITE:}$PWD" PYTHONUNBUFFERED=1 NORMEXP_DATA="$PWD/data"
work=$(mktemp -d)

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"; } > "$OUT/gpu.txt" 2>&1

start=$(date +%s)
timeout "${WH1_SECONDS:-420}" python3 -m normexp.reproduce --profile full --only WH-1 --jobs "${JOBS:-8}" \
    --outputs "$work/outputs" --results "$work/results" > "$OUT/wh1.log" 2>&1
echo "WH-1 full on the GPU: exit $?, $(( $(date +%s) - start )) s wall" >> "$OUT/gpu.txt"
cp "$work/results/full/wuhe2018/batch_sweep/claims.json" "$OUT/wh1_claims.json" 2>/dev/null
cp "$work/results/full/wuhe2018/batch_sweep/runs.csv" "$OUT/wh1_runs.csv" 2>/dev/null

timeout "${BENCH_SECONDS:-150}" python3 -c "import sys; from normexp.bench import cli; sys.argv[0] = 'normexp-bench'; \
sys.exit(cli())" --only norms --device cuda --markdown "$OUT/bench_gpu.md" > "$OUT/bench.log" 2>&1
echo "bench: exit $?" >> "$OUT/gpu.txt"
cat "$OUT/gpu.txt"
