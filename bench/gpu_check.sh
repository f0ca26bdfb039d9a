#!/usr/bin/env bash
# GPU check for a machine with NVIDIA GPUs, from a fresh checkout, in about 8 minutes:
#   1. the GPU(s) (nvidia-smi);
#   2. bench/train_step.py, convnext_tiny + resnet18 at 384 px (bf16 + channels_last are on by
#      default on CUDA), eager and with --compile: end-to-end vs model-only img/s;
#   3. a 4-minute search, 2 trials per GPU, synthetic data at 224 px, SQLite, while
#      nvidia-smi samples utilisation every 5 s; then trials finished (histosweep status).
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
# Env knobs: PY, VENV, WORK (scratch folder, default a temp dir), SEARCH_S (search length,
#   default 240), SEARCH_GRACE_S (then SIGTERM, default 30), TRAIN_STEP_TIMEOUT_S (per
#   train_step run, default 100), TRAIN_STEP (0: skip step 2), LOG (also append progress
#   lines to this file).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
WORK=${WORK:-$(mktemp -d -t histosweep-gpu-check-XXXXXX)}
SEARCH_S=${SEARCH_S:-240}
SEARCH_GRACE_S=${SEARCH_GRACE_S:-30}
TRAIN_STEP_TIMEOUT_S=${TRAIN_STEP_TIMEOUT_S:-100}
TRAIN_STEP=${TRAIN_STEP:-1}
LOG=${LOG:-/dev/null}
STARTED=$(date +%s)
mkdir -p "$WORK"
say() { echo "[gpu_check $(( $(date +%s) - STARTED ))s] $*" | tee -a "$LOG" >&2; }

# --- 0. setup ---------------------------------------------------------------------------------
command -v nvidia-smi >/dev/null || { echo "error: nvidia-smi not found: this check needs NVIDIA GPUs" >&2; exit 1; }
if [ -n "${PY:-}" ]; then
    "$PY" -c "import torch, timm, optuna, optuna_dashboard, imagehash, search, data, model, storage" \
        || { echo "error: PY=$PY cannot import the dependencies (see the Setup note at the top)" >&2; exit 1; }
else
    if ! "$VENV/bin/python" -c "import torch, timm, optuna, optuna_dashboard, imagehash, search, data, model, storage" 2>/dev/null; then
        say "setting up $VENV (pip install torch==2.14.1 torchvision==0.29.1 -e .)"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --upgrade pip
        "$VENV/bin/pip" install --quiet torch==2.14.1 torchvision==0.29.1 -e .
        STARTED=$(date +%s)  # the clock starts after the one-time install
    fi
    PY="$VENV/bin/python"
fi
HS=("$PY" -m histosweep)
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "error: torch for $PY sees no CUDA GPU (check the driver and torch build)" >&2; exit 1; }
"$PY" -c "import torch, timm, optuna; print('torch', torch.__version__, '| timm', timm.__version__, '| optuna', optuna.__version__)" | tee -a "$LOG" >&2

# --- 1. the GPU -------------------------------------------------------------------------------
say "GPU"
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv | tee "$WORK/gpus.csv" >&2
NGPU=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)

# --- 2. train step: eager and compiled --------------------------------------------------------
MODES="eager compile"; [ "$TRAIN_STEP" = 0 ] && MODES=""
for mode in $MODES; do
    flag=""; [ "$mode" = compile ] && flag="--compile"
    say "train_step $mode (convnext_tiny + resnet18, 384 px, batch 32, bf16, channels_last)"
    if ! timeout "$TRAIN_STEP_TIMEOUT_S" "$PY" bench/train_step.py --image-backbone convnext_tiny \
            --mask-backbone resnet18 --resolution 384 --batch-size 32 --steps 20 --warmup 5 \
            --n-train 64 --device cuda $flag --json > "$WORK/train_step_$mode.out"; then
        say "train_step $mode failed or passed ${TRAIN_STEP_TIMEOUT_S}s"
        echo '{"error": "failed or timed out"}' > "$WORK/train_step_$mode.out"
    fi
    tail -n 1 "$WORK/train_step_$mode.out" | tee "$WORK/train_step_$mode.json" | tee -a "$LOG" >&2
done

# --- 3. a 4-minute search at 224 px, 2 trials per GPU -----------------------------------------
export HISTOSWEEP_STORAGE="sqlite:///$WORK/study.db"
export HISTOSWEEP_ARTIFACTS="$WORK/artifacts"
export HISTOSWEEP_CACHE="$WORK/cache"
cat > "$WORK/space.toml" <<'EOF'
[params]
resolution = 224
resize_mode = "stretch"
image_backbone = "convnext_tiny"
mask_backbone = "resnet18"
pretrained = false
epochs = 4
batch_size = 32
t0 = 4
lr = { low = 1e-5, high = 3e-4, log = true }
weight_decay = { low = 1e-3, high = 1e-1, log = true }
label_smoothing = { low = 0.0, high = 0.2 }
dropout = { low = 0.1, high = 0.5 }
color_jitter_prob = { low = 0.0, high = 1.0 }
cutmix_prob = [0.0, 0.5, 1.0]
cutmix_alpha = 1.0
ensemble_top_k = [1, 2, 3]
ensemble_temperature = { low = 0.01, high = 1.0, log = true }
EOF
say "synthetic data (600 train images) + cache at 224 px + study"
"${HS[@]}" synth "$WORK/data" --n-train 600 --n-test 8 --short-side 256 >&2
"${HS[@]}" prepare "$WORK/data" --resolutions 224 --modes stretch >&2
"${HS[@]}" create gpucheck --data "$WORK/data" --space "$WORK/space.toml" --folds 3 >&2

say "search: --gpus all --trials-per-gpu 2 --timeout $SEARCH_S on $NGPU GPU(s)"
nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader,nounits -l 5 \
    > "$WORK/gpu_util.csv" &
SMI_PID=$!
SEARCH_START=$(date +%s)
# NOTE: --timeout stops starting trials; running ones finish. The outer timeout (+grace) sends
# SIGTERM, which the workers turn into "stop and re-queue" so the script stays near 8 minutes.
set +e
timeout --signal=TERM --kill-after=20 $(( SEARCH_S + SEARCH_GRACE_S )) "${HS[@]}" worker gpucheck --gpus all --trials-per-gpu 2 \
    --timeout "$SEARCH_S" --no-progress --log-dir "$WORK/logs" >&2
WORKER_RC=$?
set -e
SEARCH_SECONDS=$(( $(date +%s) - SEARCH_START ))
kill "$SMI_PID" 2>/dev/null || true
wait "$SMI_PID" 2>/dev/null || true
"${HS[@]}" status gpucheck --json > "$WORK/status.json" || echo '{}' > "$WORK/status.json"

# --- 4. summary -------------------------------------------------------------------------------
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
result = {
    "gpus": [{"index": g[0].strip(), "name": g[1].strip(), "memory": g[2].strip()} for g in gpus],
    "train_step_eager": last_json(work / "train_step_eager.json"),
    "train_step_compile": last_json(work / "train_step_compile.json"),
    "search": {
        "seconds": search_s, "worker_exit": worker_rc, "trials": status.get("trials"),
        "finished": sum(status.get("trials", {}).get(k, 0) for k in ("COMPLETE", "PRUNED")),
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
