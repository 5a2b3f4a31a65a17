#!/usr/bin/env bash
# GPU check, prepared for a short session on a machine with GPUs: AMP training on one GPU,
# torchrun DDP on all GPUs (per-region loss sums all-reduced), GPU prediction; prints steps/s
# and images/s for BENCHMARKS.md; then a training job against its pure compute on the GPU
# (bench/profile_training.py: demo flood and crop, real flood where ../shared/data/real
# exists; AMP on, the configs' default), whose tables fill the GPU rows of BENCHMARKS.md,
# "Training job against pure compute". Runs from the repository root; nothing is downloaded.
# Without a GPU it runs the same steps on the CPU (DDP with 2 gloo processes), which checks
# the script itself.
#
#   bash bench/gpu_check.sh                  # defaults below
#   SIZE=2048 SCENES=8 EPOCHS=3 bash bench/gpu_check.sh
#
# Environment: WORK (scratch folder, default /tmp/spatialfair-gpu), SIZE (scene side in px,
# default 1024), SCENES (default 4), EPOCHS (default 3), BATCH (default 32), TILE (default 256),
# WIDTH (model width, default 32), PROFILE_ROUNDS (rounds of step 4, default 2; 0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/spatialfair-gpu}
SIZE=${SIZE:-1024}; SCENES=${SCENES:-4}; EPOCHS=${EPOCHS:-3}; BATCH=${BATCH:-32}
TILE=${TILE:-256}; WIDTH=${WIDTH:-32}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
say() { echo "[gpu_check] $*"; }

if ! python -c "import torch, rasterio, geopandas, spatialfair" 2>/dev/null; then
  say "missing Python packages: install them first (pip install -e .)"
  python -c "import torch, rasterio, geopandas, spatialfair"
fi
NGPU=$(python -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -gt 0 ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  NPROC=$NGPU
else
  say "no GPU: running the CPU fallback (DDP with 2 gloo processes)"
  NPROC=2
fi
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'bf16' if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else '')"

rm -rf "$WORK"; mkdir -p "$WORK"
CFG=$WORK/config.yaml
cat > "$CFG" <<EOF
results: $WORK/results
seed: 0
datasets:
  gpu:
    task: flood
    images: $WORK/data/images/*.tif
    labels: $WORK/data/labels/*.tif
    regions: $WORK/data/regions.gpkg
strategies: {groupdro: {}}
tiling: {size: $TILE}
partitions: {grid_max: 3, offset_grids: 0, kmeans: [4]}
split: {block_tiles: 2}
model: {width: $WIDTH, depth: 4}
training: {epochs: $EPOCHS, batch_size: $BATCH, device: auto, amp: true}
prediction: {window: 1024, overlap: 64}
EOF
T=$WORK/results/gpu/tiles
sf() { spatialfair "$@" --config "$CFG" --dataset gpu; }
secs() { python -c "import time; print(time.perf_counter())"; }

say "data: $SCENES flood scenes of ${SIZE}^2 px, tiles of $TILE px"
spatialfair demo flood --out "$WORK/data" --size "$SIZE" --scenes "$SCENES" > "$WORK/demo.log" 2>&1
sf tile --out "$T" > "$WORK/tile.log" 2>&1
sf partition --tiles "$T" --out "$WORK/results/gpu/partitions.gpkg" > "$WORK/partition.log" 2>&1
sf split --tiles "$T" --partitions "$WORK/results/gpu/partitions.gpkg" > "$WORK/split.log" 2>&1

# steps/s and images/s of a training run from its train_log.csv (training epochs only)
rate() {
  python - "$1" "$T" "$BATCH" "$2" <<'PY'
import math, sys
import geopandas as gpd, pandas as pd
log, tiles, batch, procs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
n = int((gpd.read_file(f"{tiles}/tiles.gpkg", layer="tiles").split == "train").sum())
df = pd.read_csv(log)
secs = df.seconds.sum()
steps = len(df) * math.ceil(n / (batch * procs))
print(f"{n} training tiles x {len(df)} epochs in {secs:.1f} s: "
      f"{steps / secs:.2f} steps/s, {n * len(df) / secs:.1f} images/s "
      f"({procs} process(es), batch {batch} each)")
PY
}

say "1. AMP training, one process"
t0=$(secs)
sf train --strategy groupdro --tiles "$T" --out "$WORK/single" > "$WORK/train1.log" 2>&1
say "   wall $(python -c "import time; print(f'{time.perf_counter() - $t0:.1f}')") s"
grep -m1 -iE "device|amp" "$WORK/train1.log" || true
rate "$WORK/single/train_log.csv" 1

say "2. DDP with $NPROC processes (torchrun)"
t0=$(secs)
torchrun --standalone --nproc-per-node "$NPROC" -m spatialfair.cli train --config "$CFG" \
  --dataset gpu --strategy groupdro --tiles "$T" --out "$WORK/ddp" > "$WORK/train_ddp.log" 2>&1
say "   wall $(python -c "import time; print(f'{time.perf_counter() - $t0:.1f}')") s"
rate "$WORK/ddp/train_log.csv" "$NPROC"

say "3. prediction of every scene, one model load"
IMGS=$(ls "$WORK"/data/images/*.tif)
OUTS=$(for f in $IMGS; do echo "$WORK/pred/$(basename "$f")"; done)
mkdir -p "$WORK/pred"
t0=$(secs)
# shellcheck disable=SC2086
spatialfair predict --config "$CFG" --model "$WORK/single/model.pt" --image $IMGS \
  --out-classes $OUTS > "$WORK/predict.log" 2>&1
python -c "
import time; s = time.perf_counter() - $t0
n, px = $SCENES, $SIZE ** 2
print(f'[gpu_check]    {n} scenes of {$SIZE}^2 px in {s:.1f} s: {n / s:.2f} images/s, '
      f'{n * px / s / 1e6:.1f} Mpx/s (incl. start-up and COG writing)')"
grep -m1 -E " on (cuda|cpu)" "$WORK/predict.log" || true

if [ "${PROFILE_ROUNDS:-2}" -gt 0 ]; then
  say "4. training job against pure compute (bench/profile_training.py; device auto, AMP on)"
  python bench/profile_training.py --rounds "${PROFILE_ROUNDS:-2}" --work "$WORK/profile" \
    --json "$WORK/profile.json" | tee "$WORK/profile.md"
fi
say "done; logs in $WORK"
