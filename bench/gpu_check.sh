#!/usr/bin/env bash
# GPU check for a machine with NVIDIA GPUs, from a fresh checkout, in about 9 minutes:
#   1. the GPU(s) (nvidia-smi);
#   2. bench/train_step.py, convnext_tiny + resnet18 at 384 px (bf16 + channels_last are on by
#      default on CUDA; timm's Lion), eager and with --compile: end-to-end vs model-only img/s;
#   3. bench/fold_phases.py on the GPU: the share of a fold's wall time outside training epochs
#      (convnext_tiny + resnet18, 224 px, 600 images, 4 epochs; target <= 10 %);
#   4. a 4-minute search, $TRIALS_PER_GPU trials per GPU (default 2; `auto` sizes it from free
#      memory), synthetic data at 224 px, SQLite, while nvidia-smi samples utilisation every
#      5 s (target: mean >= 90 %); then trials finished and trials per hour (histosweep status).
#   5. bench/frozen.py with a ViT-L/16 at 224 px (random init): embedding rate (img/s) and a
#      frozen trial's time against a fine-tuning trial of the same backbone (issue 15).
# The last line is one JSON object with every figure.
#
# Run from the repository root:  bash bench/gpu_check.sh
# Setup, one of:
#   - PY=/path/to/python: an interpreter that already imports torch (CUDA build), timm, optuna
#     and the other dependencies in pyproject.toml; the checkout is imported from here. Use this
#     on machines without a package registry (carry the missing wheels, pip install --target,
#     and export PYTHONPATH).
#   - otherwise $VENV (default .venv-gpu) is made with python3 -m venv and
#     pip install torch==2.14.1 torchvision==0.29.1 -e .
#     which needs only the package registries (PyPI; set PIP_INDEX_URL for a mirror). A VENV
#     that already imports torch and histosweep is reused as it is. The one-time install (a
#     few GB of wheels) is not counted in the ~8 minutes.
# Nothing is downloaded at run time: pretrained=false everywhere.
# The commands run from $WORK, not the checkout: with PY=, the checkout's folders are linked
#   there as the installed layout (histosweep.search = search/, ...; see `overlay`), and
#   `python -m histosweep` from the checkout's root would find the bare histosweep/ folder first.
# Env knobs: PY, VENV, WORK (scratch folder, default a temp dir), SEARCH_S (search length,
#   default 240), SEARCH_GRACE_S (then SIGTERM, default 30), TRAIN_STEP_TIMEOUT_S (per
#   train_step / fold_phases run, default 100), TRAIN_STEP (0: skip step 2), FOLD_PHASES (0: skip
#   step 3), FROZEN (0: skip step 5), TRIALS_PER_GPU (default 2, or auto), LOG (also append progress lines to this file),
#   SMOKE=1 (no GPU: every step on the CPU with tiny models for seconds each, to check the
#   script itself; its figures mean nothing).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
VENV=${VENV:-$REPO/.venv-gpu}
WORK=${WORK:-$(mktemp -d -t histosweep-gpu-check-XXXXXX)}
SEARCH_S=${SEARCH_S:-240}
SEARCH_GRACE_S=${SEARCH_GRACE_S:-30}
TRAIN_STEP_TIMEOUT_S=${TRAIN_STEP_TIMEOUT_S:-100}
TRAIN_STEP=${TRAIN_STEP:-1}
FOLD_PHASES=${FOLD_PHASES:-1}
FROZEN=${FROZEN:-1}
TRIALS_PER_GPU=${TRIALS_PER_GPU:-2}
SMOKE=${SMOKE:-0}
LOG=${LOG:-/dev/null}
if [ "$SMOKE" = 1 ]; then  # the script's own plumbing on a CPU: tiny models, seconds per step
    DEVICE=cpu GPUS=cpu IMG=convnext_atto MASK=resnet10t STEP_RES=64 STEP_BATCH=8 RES=64 BATCH=8
    N_TRAIN=48 SHORT_SIDE=96 STEPS="--steps 2 --warmup 1 --rounds 1" MODES_ALL="eager"
    VIT=test_vit VIT_RES=32 VIT_N=32
else
    DEVICE=cuda GPUS=all IMG=convnext_tiny MASK=resnet18 STEP_RES=384 STEP_BATCH=32 RES=224 BATCH=32
    N_TRAIN=600 SHORT_SIDE=256 STEPS="--steps 20 --warmup 5" MODES_ALL="eager compile"
    VIT=vit_large_patch16_224 VIT_RES=224 VIT_N=256
fi
STARTED=$(date +%s)
mkdir -p "$WORK"
say() { echo "[gpu_check $(( $(date +%s) - STARTED ))s] $*" | tee -a "$LOG" >&2; }

# --- 0. setup ---------------------------------------------------------------------------------
[ "$SMOKE" = 1 ] || command -v nvidia-smi >/dev/null \
    || { echo "error: nvidia-smi not found: this check needs NVIDIA GPUs (SMOKE=1 checks the script on a CPU)" >&2; exit 1; }
IMPORTS="import torch, timm, optuna, optuna_dashboard, imagehash, histosweep.search, histosweep.data, histosweep.model, histosweep.storage"
overlay() {  # the checkout as the installed layout, without pip: $WORK/site/histosweep/{cli,data,...}
    local site="$WORK/site/histosweep" entry
    mkdir -p "$site"
    for entry in "$REPO"/histosweep/*; do ln -sfn "$entry" "$site/"; done
    for entry in data model search bundle storage; do ln -sfn "$REPO/$entry" "$site/$entry"; done
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
}
cd "$WORK"
if [ -n "${PY:-}" ]; then
    "$PY" -c "$IMPORTS" 2>/dev/null || overlay
    "$PY" -c "$IMPORTS" \
        || { echo "error: PY=$PY cannot import the dependencies (see the Setup note at the top)" >&2; exit 1; }
else
    if ! "$VENV/bin/python" -c "$IMPORTS" 2>/dev/null; then
        say "setting up $VENV (pip install torch==2.14.1 torchvision==0.29.1 -e .)"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --upgrade pip
        "$VENV/bin/pip" install --quiet torch==2.14.1 torchvision==0.29.1 -e "$REPO"
        STARTED=$(date +%s)  # the clock starts after the one-time install
    fi
    PY="$VENV/bin/python"
fi
HS=("$PY" -m histosweep)
[ "$SMOKE" = 1 ] || "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "error: torch for $PY sees no CUDA GPU (check the driver and torch build)" >&2; exit 1; }
"$PY" -c "import torch, timm, optuna; print('torch', torch.__version__, '| timm', timm.__version__, '| optuna', optuna.__version__)" | tee -a "$LOG" >&2

# --- 1. the GPU -------------------------------------------------------------------------------
say "GPU"
if [ "$SMOKE" = 1 ]; then
    echo "index, name, memory.total [MiB], driver_version" > "$WORK/gpus.csv"; NGPU=0
else
    nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv | tee "$WORK/gpus.csv" >&2
    NGPU=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
fi

# --- 2. train step: eager and compiled --------------------------------------------------------
MODES=$MODES_ALL; [ "$TRAIN_STEP" = 0 ] && MODES=""
for mode in $MODES; do
    flag=""; [ "$mode" = compile ] && flag="--compile"
    say "train_step $mode ($IMG + $MASK, $STEP_RES px, batch $STEP_BATCH, bf16, channels_last)"
    if ! timeout "$TRAIN_STEP_TIMEOUT_S" "$PY" "$REPO/bench/train_step.py" --image-backbone "$IMG" \
            --mask-backbone "$MASK" --resolution "$STEP_RES" --batch-size "$STEP_BATCH" $STEPS \
            --n-train 64 --device "$DEVICE" $flag --json > "$WORK/train_step_$mode.out"; then
        say "train_step $mode failed or passed ${TRAIN_STEP_TIMEOUT_S}s"
        echo '{"error": "failed or timed out"}' > "$WORK/train_step_$mode.out"
    fi
    tail -n 1 "$WORK/train_step_$mode.out" | tee "$WORK/train_step_$mode.json" | tee -a "$LOG" >&2
done

# --- 3. a fold's phases on the device ---------------------------------------------------------
if [ "$FOLD_PHASES" != 0 ]; then
    say "fold_phases ($IMG + $MASK, $RES px, $N_TRAIN images, 4 epochs, batch $BATCH)"
    if ! timeout "$TRAIN_STEP_TIMEOUT_S" "$PY" "$REPO/bench/fold_phases.py" --image-backbone "$IMG" \
            --mask-backbone "$MASK" --resolution "$RES" --n-train "$N_TRAIN" --epochs 4 \
            --batch-size "$BATCH" --device "$DEVICE" > "$WORK/fold_phases.out"; then
        say "fold_phases failed or passed ${TRAIN_STEP_TIMEOUT_S}s"
        echo '{"error": "failed or timed out"}' >> "$WORK/fold_phases.out"
    fi
    grep -v '^{' "$WORK/fold_phases.out" >&2 || true
    tail -n 1 "$WORK/fold_phases.out" > "$WORK/fold_phases.json"
fi

# --- 4. a 4-minute search at 224 px, $TRIALS_PER_GPU trials per GPU ---------------------------
export HISTOSWEEP_STORAGE="sqlite:///$WORK/study.db"
export HISTOSWEEP_ARTIFACTS="$WORK/artifacts"
export HISTOSWEEP_CACHE="$WORK/cache"
cat > "$WORK/space.toml" <<'EOF'
[params]
resolution = RES_
resize_mode = "stretch"
image_backbone = "IMG_"
mask_backbone = "MASK_"
pretrained = false
epochs = 4
batch_size = BATCH_
t0 = 4
lr = { low = 1e-5, high = 3e-4, log = true }
weight_decay = { low = 1e-3, high = 1e-1, log = true }
label_smoothing = { low = 0.0, high = 0.2 }
dropout = { low = 0.1, high = 0.5 }
color_jitter_prob = { low = 0.0, high = 1.0 }
cutmix_prob = [0.0, 0.5, 1.0]
cutmix_alpha = 1.0
EOF
sed -i "s/RES_/$RES/; s/IMG_/$IMG/; s/MASK_/$MASK/; s/BATCH_/$BATCH/" "$WORK/space.toml"
say "synthetic data ($N_TRAIN train images) + cache at $RES px + study"
"${HS[@]}" synth "$WORK/data" --n-train "$N_TRAIN" --n-test 8 --short-side "$SHORT_SIDE" >&2
"${HS[@]}" prepare "$WORK/data" --resolutions "$RES" --modes stretch >&2
"${HS[@]}" create gpucheck --data "$WORK/data" --space "$WORK/space.toml" --folds 3 >&2

say "search: --gpus $GPUS --trials-per-gpu $TRIALS_PER_GPU --timeout $SEARCH_S on $NGPU GPU(s)"
if [ "$SMOKE" = 1 ]; then
    : > "$WORK/gpu_util.csv"; sleep 3600 & SMI_PID=$!  # no GPU to sample
else
    nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits -l 5 \
        > "$WORK/gpu_util.csv" &
    SMI_PID=$!
fi
SEARCH_START=$(date +%s)
# NOTE: --timeout stops starting trials; running ones finish. The outer timeout (+grace) sends
# SIGTERM, which the workers turn into "stop and re-queue" so the script stays near 8 minutes.
set +e
timeout --signal=TERM --kill-after=20 $(( SEARCH_S + SEARCH_GRACE_S )) "${HS[@]}" worker gpucheck --gpus "$GPUS" --trials-per-gpu "$TRIALS_PER_GPU" \
    --timeout "$SEARCH_S" --no-progress --log-dir "$WORK/logs" >&2
WORKER_RC=$?
set -e
SEARCH_SECONDS=$(( $(date +%s) - SEARCH_START ))
kill "$SMI_PID" 2>/dev/null || true
wait "$SMI_PID" 2>/dev/null || true
"${HS[@]}" status gpucheck --json > "$WORK/status.json" || echo '{}' > "$WORK/status.json"

# --- 5. frozen features: ViT-L/16 embedding rate and a frozen trial vs a fine-tuning one -------
if [ "$FROZEN" != 0 ]; then
    say "frozen ($VIT at $VIT_RES px, $VIT_N images, 2 folds x 2 epochs, batch $BATCH)"
    if ! timeout "$TRAIN_STEP_TIMEOUT_S" "$PY" "$REPO/bench/frozen.py" --backbone "$VIT" \
            --resolution "$VIT_RES" --n-train "$VIT_N" --batch-size "$BATCH" --embed-batch 64 \
            --device "$DEVICE" > "$WORK/frozen.out"; then
        say "frozen failed or passed ${TRAIN_STEP_TIMEOUT_S}s"
        echo '{"error": "failed or timed out"}' >> "$WORK/frozen.out"
    fi
    grep -v '^{' "$WORK/frozen.out" >&2 || true
    tail -n 1 "$WORK/frozen.out" > "$WORK/frozen.json"
fi

# --- 6. summary -------------------------------------------------------------------------------
say "done; scratch files in $WORK"
"$PY" - "$WORK" "$WORKER_RC" "$SEARCH_SECONDS" "$(( $(date +%s) - STARTED ))" <<'EOF'
import csv, json, statistics, sys
from pathlib import Path

work, worker_rc, search_s, total_s = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

def last_json(path):
    if not path.exists():
        return {"skipped": True}
    try:
        return json.loads(path.read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return {"error": f"no JSON in {path.name}"}

gpus = [row for row in csv.reader((work / "gpus.csv").read_text().splitlines()[1:]) if row]
util = {}
for row in csv.reader((work / "gpu_util.csv").read_text().splitlines()):
    if len(row) == 3 and row[1].strip().isdigit() and row[2].strip().isdigit():  # not [N/A]
        util.setdefault(row[0].strip(), []).append((int(row[1]), int(row[2])))
print("GPU utilisation samples (every 5 s), % per GPU:", file=sys.stderr)
for idx, samples in util.items():
    print(f"  gpu{idx}: " + " ".join(str(u) for u, _ in samples), file=sys.stderr)
status = json.loads((work / "status.json").read_text())
finished = sum(status.get("trials", {}).get(k, 0) for k in ("COMPLETE", "PRUNED"))
result = {
    "gpus": [{"index": g[0].strip(), "name": g[1].strip(), "memory": g[2].strip()} for g in gpus],
    "train_step_eager": last_json(work / "train_step_eager.json"),
    "train_step_compile": last_json(work / "train_step_compile.json"),
    "fold_phases": last_json(work / "fold_phases.json"),
    "frozen": last_json(work / "frozen.json"),
    "search": {
        "seconds": search_s, "worker_exit": worker_rc, "trials": status.get("trials"),
        "finished": finished,
        "trials_per_hour": round(finished * 3600 / max(search_s, 1), 1),
        "best": status.get("best"), "epochs": status.get("epochs"),
        "gpu_util_mean": {k: round(statistics.mean(u for u, _ in v), 1) for k, v in util.items()},
        "gpu_util_max": {k: max(u for u, _ in v) for k, v in util.items()},
        "gpu_mem_max_mib": {k: max(m for _, m in v) for k, v in util.items()},
        "util_samples": {k: [u for u, _ in v] for k, v in util.items()},
    },
    "total_seconds": total_s,
}
print(f"trials finished: {result['search']['finished']} ({result['search']['trials']})", file=sys.stderr)
print(json.dumps(result))
EOF
