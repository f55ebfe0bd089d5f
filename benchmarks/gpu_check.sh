#!/usr/bin/env bash
# One prepared check on a lent GPU (H100/H200), run from the repository root:
#
#   bash benchmarks/gpu_check.sh            # OUT=<folder> for the logs (default /tmp/gpu_check)
#
# 1. the smoke preset of train_lm on the GPU (the whole harness: local corpus, Grain, Orbax);
# 2. the gpu preset (~300M parameters, bf16, seq 2048, batch 32) for 200 steps without
#    checkpoints: MFU and tokens/s from metrics.jsonl (median over log intervals, the first
#    dropped), by the "exact" FLOP convention of scaling/flops.py, against the chip's dense bf16
#    peak (scaling.flops.peak_flops);
# 3. while time is left (GPU_CHECK_BUDGET_S, default 420 s): batch 64, and batch 64 with full
#    rematerialization (remat=full).
#
# Packages the GPU image lacks (grain, tensorflow-datasets, qwix and their needs) travel as wheels
# in .whl/ (see /work/.library/device/README.md); the image's own jax/flax/optax/orbax are used
# first, and the project's pinned flax/optax/orbax (.whl/pins) if the smoke run fails with them.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
BUDGET=${GPU_CHECK_BUDGET_S:-420}
START=$SECONDS
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  if [ -d .whl/pins ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pins .whl/pins/*.whl || exit 3
  fi
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
versions='import jax, flax, optax, orbax.checkpoint as oc, grain, qwix; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, "orbax", oc.__version__, jax.devices())'
python3 -c "$versions" 2>&1 | tail -3 | tee -a "$OUT/gpu.txt"

smoke() { timeout 240 python3 -m experiments.train_lm --workdir runs/gpu_smoke --preset smoke > "$OUT/smoke.log" 2>&1; }
if ! smoke; then
  echo "smoke failed with the image's packages:"; tail -15 "$OUT/smoke.log"
  if [ -d /tmp/pins ]; then
    export PYTHONPATH=/tmp/pins:/tmp/site:$PWD
    python3 -c "$versions" 2>&1 | tail -3 | tee -a "$OUT/gpu.txt"
    rm -rf runs/gpu_smoke
    smoke || { echo "smoke failed with the pinned packages too:"; tail -30 "$OUT/smoke.log"; exit 1; }
  else
    exit 1
  fi
fi
tail -2 "$OUT/smoke.log"
echo "smoke ok at $((SECONDS - START)) s"

summary() {  # $1 = workdir, $2 = label
  python3 - "$1" "$2" <<'EOF' | tee -a "$OUT/summary.txt"
import json, statistics, sys
workdir, label = sys.argv[1], sys.argv[2]
try:
    rows = [json.loads(l) for l in open(f"{workdir}/metrics.jsonl") if '"mfu"' in l][1:]
except OSError as e:
    print(f"{label}: no metrics ({e})"); raise SystemExit
if not rows:
    print(f"{label}: no timed intervals"); raise SystemExit
mfu = [r["mfu"] for r in rows if r.get("mfu") is not None]
tps = [r["tokens_per_s"] for r in rows]
st = [r["step_time_s"] for r in rows]
try:
    result = json.load(open(f"{workdir}/result.json"))
except OSError:
    result = {}
attn, kind = result.get("attention_impl"), result.get("device_kind")
print(f"{label}: intervals {len(rows)}  MFU median {statistics.median(mfu) if mfu else float('nan'):.3f} "
      f"[{min(mfu) if mfu else float('nan'):.3f}, {max(mfu) if mfu else float('nan'):.3f}]  "
      f"tokens/s {statistics.median(tps):,.0f}  step {statistics.median(st)*1e3:.1f} ms  attention {attn}  {kind}  eval_loss {result.get('eval_loss')}")
EOF
}

run_gpu() {  # $1 = label, $2 = time limit, rest = --set overrides
  local label=$1 limit=$2; shift 2
  local sets=(--set train.tokens=1.3e7 --set train.checkpoint_every=0 --set train.log_every=10 --set train.eval_every=0)
  for s in "$@" ${GPU_CHECK_EXTRA:-}; do sets+=(--set "$s"); done
  timeout "$limit" python3 -m experiments.train_lm --workdir "runs/$label" --preset gpu "${sets[@]}" > "$OUT/$label.log" 2>&1
  echo "$label: exit $? at $((SECONDS - START)) s"; tail -4 "$OUT/$label.log"
  cp "runs/$label/metrics.jsonl" "$OUT/$label.metrics.jsonl" 2>/dev/null
  summary "runs/$label" "$label"
}

run_gpu gpu_preset 300
for variant in "gpu_b64 train.batch_size=64" "gpu_b64_full model.remat=full train.batch_size=64"; do
  read -r label rest <<< "$variant"
  if (( SECONDS - START + 150 > BUDGET )); then echo "skipped $label: budget"; continue; fi
  run_gpu "$label" $(( BUDGET - (SECONDS - START) )) $rest
done
echo "=== summary (total $((SECONDS - START)) s)"; cat "$OUT/summary.txt"
