#!/usr/bin/env bash
# Raw vs EMA vs SWA weights of ONE training run: does weight averaging find a flatter point? Trains the tiny
# UNet once with an EMA copy and an SWA average tracked beside the raw weights, then measures the three weight
# sets on one frozen evaluation bank:
#   - `flatkit hessian CKPT --compare ema,swa`: top Hessian eigenvalues and trace of each weight set;
#   - `flatkit landscape CKPT --compare ema,swa`: a 2-D slice of each through the same random directions;
#   - `flatkit perturb CKPT --weights W` for each W: loss under weight perturbation, then `flatkit figures` draws
#     the three arms (ADM, +EMA, +SWA in the paper's terms) side by side and writes tables.md.
#
# Usage: bash examples/compare_raw_ema_swa.sh
# Environment (defaults in brackets):
#   OUT [runs/averaging]  DATA [builtin:shapes16]  PRESET [tiny]  STEPS [600]  EMA [0.999]
#   SWA_START [STEPS/3+1]  NEVAL [64]  TOPK [3]  TRACE_HVPS [60]  POINTS [21]  K [8] (perturbation directions)
#   TRAIN_ARGS [""]  more `flatkit train` options (the tests pass "--samples 0 --quiet")
# A rerun reuses a finished training.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/flatkit ] || bash scripts/setup.sh
. .venv/bin/activate
OUT=${OUT:-runs/averaging}
DATA=${DATA:-builtin:shapes16}
PRESET=${PRESET:-tiny}
STEPS=${STEPS:-600}
EMA=${EMA:-0.999}
SWA_START=${SWA_START:-$((STEPS / 3 + 1))}
NEVAL=${NEVAL:-64}
TOPK=${TOPK:-3}
TRACE_HVPS=${TRACE_HVPS:-60}
POINTS=${POINTS:-21}
K=${K:-8}
TRAIN_ARGS=${TRAIN_ARGS:-}
C=$OUT/run/ckpt.pt

if [ ! -f "$C" ]; then
  # shellcheck disable=SC2086
  flatkit train --data "$DATA" --preset "$PRESET" --steps "$STEPS" --ema "$EMA" --swa-start "$SWA_START" \
    --out "$OUT/run" $TRAIN_ARGS
fi
flatkit hessian "$C" --compare ema,swa --top-k "$TOPK" --tol 1e-2 --trace --trace-rtol 0.05 \
  --trace-max-hvps "$TRACE_HVPS" --n-eval "$NEVAL" --out "$OUT/hessian"
flatkit landscape "$C" --compare ema,swa --labels raw,EMA,SWA --points "$POINTS" --n-eval "$NEVAL" \
  --out "$OUT/landscape"
for w in raw ema swa; do
  flatkit perturb "$C" --weights "$w" --n-directions "$K" --n-eval "$NEVAL" --out "$OUT/results/$w"
done
flatkit figures "$OUT/results/raw" "$OUT/results/ema" "$OUT/results/swa" --out "$OUT/figures"

python - "$OUT" <<'PY'
import json, sys

from flatkit.analyses.hessian import HessianResult
from flatkit.analyses.landscape import LandscapeResult

out = sys.argv[1]
h = HessianResult.load(f"{out}/hessian")
land = LandscapeResult.load(f"{out}/landscape")
figs = json.load(open(f"{out}/figures/figures.json"))
print(f"\n{'weights':10} {'loss':>9} {'lambda_max':>11} {'trace':>11} {'L at the slice centre':>22}")
for m, centre in enumerate(land.loss_centre):
    tr = h.trace[m] if h.trace else None
    print(f"{h.meta['checkpoints'][m]['weights']:10} {h.loss[m]:9.5f} {h.lambda_max[m]:11.4g} "
          f"{tr if tr is None else format(tr, '11.4g')} {centre:22.5f}")
print(f"\narms in the figures: {', '.join(r['label'] for r in figs['runs'])}")
print(f"figures: {out}/landscape/landscape.png  {out}/figures/perturb.png  {out}/figures/tables.md")
PY
