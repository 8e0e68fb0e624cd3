#!/usr/bin/env bash
# Analyse a plain ADM (openai/guided-diffusion, DDPM-IP, ADM-ES) checkpoint: a bare state dict such as
# ema_0.9999_500000.pt, with its architecture given as ADM flags in a JSON file. Describes the model
# (`flatkit info`), measures the Hessian's top eigenvalues and trace (`flatkit hessian --adm-flags`) and a 2-D
# loss landscape (`flatkit landscape --adm-flags`) on one frozen evaluation bank, and prints a summary.
#
# Usage: bash examples/analyse_adm_checkpoint.sh [STATE_DICT FLAGS_JSON]
#   With no argument the script first writes a small stand-in: an ADM-layout state dict of a 16x16 UNet with
#   learned sigma and a cosine schedule (so the loss is ADM's hybrid L_simple + L_vlb), built by flatkit's ADM
#   UNet (key-for-key guided-diffusion's), and its flags file, into $OUT/adm/.
# Environment (defaults in brackets):
#   OUT [runs/adm]                 output folder
#   DATA [builtin:shapes16]        the data of the evaluation bank (ADM checkpoints record none), e.g.
#                                  cifar10:~/data/cifar-10-python.tar.gz for the paper's CIFAR-10 models
#   NEVAL [64]  TOPK [3]  TRACE_HVPS [60]  POINTS [21]   budgets of the bank, Lanczos, Hutch++, the grid
#   DEVICE [auto]                  cpu, cuda, cuda:N or auto
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/flatkit ] || bash scripts/setup.sh
. .venv/bin/activate
OUT=${OUT:-runs/adm}
DATA=${DATA:-builtin:shapes16}
NEVAL=${NEVAL:-64}
TOPK=${TOPK:-3}
TRACE_HVPS=${TRACE_HVPS:-60}
POINTS=${POINTS:-21}
DEVICE=${DEVICE:-auto}
mkdir -p "$OUT"

if [ $# -ge 2 ]; then
  SD=$1
  FLAGS=$2
else
  SD=$OUT/adm/ema_0.9999_000000.pt
  FLAGS=$OUT/adm/flags.json
  python - "$SD" "$FLAGS" <<'PY'
import json, sys
from pathlib import Path

import torch

from flatkit.models.adm_flags import model_config_from_adm_flags
from flatkit.models.presets import build_model

sd_path, flags_path = Path(sys.argv[1]), Path(sys.argv[2])
# ADM's command-line flag names (guided-diffusion script_util); anything not given takes ADM's default
flags = {"image_size": 16, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
         "attention_resolutions": "8", "num_head_channels": 16, "use_scale_shift_norm": True,
         "resblock_updown": True, "use_new_attention_order": True, "learn_sigma": True, "dropout": 0.1,
         "diffusion_steps": 1000, "noise_schedule": "cosine", "rescale_learned_sigmas": True}
model = build_model(model_config_from_adm_flags(flags), seed=0)
# ADM zero-initialises each residual branch's last layer and the output conv: move every weight off its
# initialisation (as a trained model is) so that every layer shows in the curvature
g = torch.Generator().manual_seed(0)
state = {k: v + 0.02 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
         for k, v in model.state_dict().items()}
sd_path.parent.mkdir(parents=True, exist_ok=True)
torch.save(state, sd_path)  # a bare state dict with ADM's key names, as ADM's TrainLoop writes it
flags_path.write_text(json.dumps(flags, indent=1))
print(f"wrote {sd_path} ({sum(v.numel() for v in state.values()):,} numbers) and {flags_path}")
PY
fi

flatkit info "$SD" --adm-flags "$FLAGS"
flatkit hessian "$SD" --adm-flags "$FLAGS" --data "$DATA" --n-eval "$NEVAL" --top-k "$TOPK" --tol 1e-2 \
  --trace --trace-rtol 0.05 --trace-max-hvps "$TRACE_HVPS" --device "$DEVICE" --out "$OUT/hessian"
flatkit landscape "$SD" --adm-flags "$FLAGS" --data "$DATA" --n-eval "$NEVAL" --points "$POINTS" \
  --device "$DEVICE" --out "$OUT/landscape"

python - "$OUT" <<'PY'
import sys

import numpy as np

from flatkit.analyses.hessian import HessianResult
from flatkit.analyses.landscape import LandscapeResult

out = sys.argv[1]
h = HessianResult.load(f"{out}/hessian")
land = LandscapeResult.load(f"{out}/landscape")
obj = h.meta["objective"]
vals = land.values
print(f"\nloss          {h.loss[0]:.6g} ({obj['loss_resolved']}, bank of {obj['n']} from {obj['data']})")
print(f"lambda_1..k   {', '.join(f'{v:.4g}' for v in h.eigenvalues[0])}")
if h.trace:
    print(f"trace         {h.trace[0]:.4g} +- {h.trace_stderr[0]:.2g} (Hutch++, {h.trace_hvps[0]} HVPs)")
print(f"landscape     L(theta) = {land.loss_centre[0]:.6g}, grid {vals.shape[-2]}x{vals.shape[-1]}: "
      f"{np.nanmin(vals):.4g} .. {np.nanmax(vals):.4g}")
print(f"figures       {out}/landscape/landscape.png (and .html)")
PY
