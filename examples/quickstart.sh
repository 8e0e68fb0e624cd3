#!/usr/bin/env bash
# Plain vs SAM in a few commands (`flatkit demo` does all nine arms): train the tiny UNet on built-in shapes twice, plain and with
# SAM (rho 0.5; EMA and SWA tracked in both runs), describe the checkpoints, then compare their curvature
# (top Hessian eigenvalues and trace) and their loss landscapes on one frozen evaluation bank.
# Usage: bash examples/quickstart.sh [OUT_DIR] [STEPS] [N_EVAL]     (defaults: runs/quickstart 600 64)
# A rerun resumes: finished trainings are not repeated. Extra `flatkit train` options may be passed in the
# environment variable QUICKSTART_TRAIN_ARGS (the test suite uses it to draw fewer preview samples), and the
# measures' sizes in TOPK [3] (top eigenvalues), TRACE_HVPS [40] (Hutch++ budget) and POINTS [9] (landscape grid
# points per axis); the test suite makes them small.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/flatkit ] || bash scripts/setup.sh
. .venv/bin/activate
OUT=${1:-runs/quickstart}
STEPS=${2:-600}
NEVAL=${3:-64}
TOPK=${TOPK:-3}
TRACE_HVPS=${TRACE_HVPS:-40}
POINTS=${POINTS:-9}
mkdir -p "$OUT"
for arm in plain sam; do
  args=(--data builtin:shapes16 --preset tiny --steps "$STEPS" --ema 0.999 --swa-start $((STEPS / 3 + 1))
        --save-every 100 --out "$OUT/$arm")
  [ "$arm" = sam ] && args+=(--sam-rho 0.5)
  # shellcheck disable=SC2206
  args+=(${QUICKSTART_TRAIN_ARGS:-})
  if [ -f "$OUT/$arm/ckpt.pt" ]; then
    step=$(flatkit info "$OUT/$arm/ckpt.pt" --json | python -c "import json,sys; print(json.load(sys.stdin)['step'])")
    [ "$step" -ge "$STEPS" ] && { echo "$OUT/$arm: already trained to step $step"; continue; }
    args+=(--resume)
  fi
  flatkit train "${args[@]}"
done
flatkit info "$OUT/sam/ckpt.pt"
flatkit hessian "$OUT/plain/ckpt.pt" --compare "$OUT/sam/ckpt.pt" --top-k "$TOPK" --tol 1e-2 --trace \
  --trace-rtol 0.05 --trace-max-hvps "$TRACE_HVPS" --n-eval "$NEVAL" --out "$OUT/hessian"
flatkit landscape "$OUT/plain/ckpt.pt" --compare "$OUT/sam/ckpt.pt" --points "$POINTS" --n-eval "$NEVAL" \
  --out "$OUT/landscape"
python - "$OUT" <<'PY'
import sys
from flatkit.analyses.hessian import HessianResult
out = sys.argv[1]
h = HessianResult.load(f"{out}/hessian")
print(f"\n{'model':12} {'loss':>8} {'lambda_max':>11} {'trace':>11}")
for m, name in enumerate(h.labels):
    tr = h.trace[m] if h.trace else None
    print(f"{name:12} {h.loss[m]:8.4f} {h.lambda_max[m]:11.4g} {tr if tr is None else format(tr, '11.4g')}")
print(f"\nsamples: {out}/plain/samples.png {out}/sam/samples.png")
print(f"curvature: {out}/hessian/   landscape: {out}/landscape/landscape.png (and .html)")
PY
