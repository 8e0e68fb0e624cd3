#!/usr/bin/env bash
# The paper's CIFAR-10 study (Lee et al., ICCV 2025, Table 1 and its flatness / robustness figures), end to end
# with flatkit's commands:
#   1. three trainings of the ADM CIFAR-10 UNet (`--preset cifar10`: ADM's flags, AdamW lr 1e-4, cosine schedule,
#      learned sigma), each tracking EMA (0.9999, ADM's constant rate) and SWA, give the nine arms:
#      adm -> ADM, +EMA, +SWA;  ip (input perturbation, gamma IP_GAMMA) -> +IP, +IP+EMA, +IP+SWA;
#      sam (SAM, radius SAM_RHO) -> +SAM, +SAM+EMA, +SAM+SWA;
#   2. for every arm (run, weights): flatness (hessian, sharpness, landscape, perturb), what it buys (prior,
#      exposure, quantize) and sample quality (sample + fid at each T' of TPRIME);
#   3. `flatkit figures` rebuilds the figures and tables (tables.md) from the result files.
# What the paper did not publish is an environment variable here (docs/protocol.md): SAM_RHO, SWA_START /
# SWA_EVERY, STEPS / BATCH, SAMPLER, REF, the flatness-plot and quantizer settings. Each lands in the result
# files' `meta`.
#
# Usage: DATA=cifar10:~/data/cifar-10-python.tar.gz NPROC=8 DETECTOR=inception-2015-12-05.pt \
#          bash examples/paper_cifar10.sh
# Environment (defaults in brackets):
#   DATA [cifar10:data/cifar-10-python.tar.gz]  training data (and the FID reference unless REF)
#   PRESET [cifar10]  STEPS [500000]  BATCH [128] (global batch)  SAVE_EVERY [10000]  TRAIN_ARGS [""] (more
#     `flatkit train` options, e.g. "--samples 0")
#   NPROC [1]     processes per machine: >1 runs train, hessian, landscape, perturb and sample under
#                 `torchrun --standalone --nproc-per-node NPROC` (one GPU each)
#   DEVICE [auto] OUT [runs/paper_cifar10]
#   SAM_RHO [0.5]  IP_GAMMA [0.1] (DDPM-IP's CIFAR-10 configs use 0.15)  EMA [0.9999]
#   SWA_START [STEPS/2]  SWA_EVERY [50000/BATCH: once per CIFAR-10 epoch]
#   ARMS ["adm:raw adm:ema adm:swa ip:raw ip:ema ip:swa sam:raw sam:ema sam:swa"]  the arms measured (RUN:WEIGHTS;
#     only the runs they name are trained)
#   NEVAL [512] EVAL_BATCH [64] TOPK [5] TRACE_HVPS [100] POINTS [21] PERTURB_K [8] RADII [0,0.01,...,0.1]
#     SHARP_STEPS [10]  budgets of the flatness measures (one frozen bank per arm, seed 0)
#   N [256] ROBUST_STEPS [20] N_REF [512] BITS [8,4]  samples, T' and reference items of prior / exposure /
#     quantize
#   TPRIME ["20 100"] SAMPLER [ddpm] FID_N [50000] SAMPLE_BATCH [256]  sample quality at each T'
#   DETECTOR [""]  FID detector: pytorch-fid, clean-fid, torch-fidelity, a .pt2 / TorchScript file; without
#     it `flatkit fid` reports only the weight-free distances   REF [DATA]  FID reference   FID_ARGS [""]
#   JOBS [1]       arms analysed in parallel (each analysis uses NPROC processes)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/flatkit ] || bash scripts/setup.sh
. .venv/bin/activate

DATA=${DATA:-cifar10:data/cifar-10-python.tar.gz}
PRESET=${PRESET:-cifar10}
STEPS=${STEPS:-500000}
BATCH=${BATCH:-128}
SAVE_EVERY=${SAVE_EVERY:-10000}
TRAIN_ARGS=${TRAIN_ARGS:-}
NPROC=${NPROC:-1}
DEVICE=${DEVICE:-auto}
OUT=${OUT:-runs/paper_cifar10}
SAM_RHO=${SAM_RHO:-0.5}
IP_GAMMA=${IP_GAMMA:-0.1}
EMA=${EMA:-0.9999}
SWA_START=${SWA_START:-$((STEPS / 2))}
SWA_EVERY=${SWA_EVERY:-$((50000 / BATCH))}
ARMS=${ARMS:-"adm:raw adm:ema adm:swa ip:raw ip:ema ip:swa sam:raw sam:ema sam:swa"}
NEVAL=${NEVAL:-512}
EVAL_BATCH=${EVAL_BATCH:-64}
TOPK=${TOPK:-5}
TRACE_HVPS=${TRACE_HVPS:-100}
POINTS=${POINTS:-21}
PERTURB_K=${PERTURB_K:-8}
RADII=${RADII:-0,0.01,0.02,0.04,0.06,0.08,0.1}
SHARP_STEPS=${SHARP_STEPS:-10}
N=${N:-256}
ROBUST_STEPS=${ROBUST_STEPS:-20}
N_REF=${N_REF:-512}
BITS=${BITS:-8,4}
TPRIME=${TPRIME:-"20 100"}
SAMPLER=${SAMPLER:-ddpm}
FID_N=${FID_N:-50000}
SAMPLE_BATCH=${SAMPLE_BATCH:-256}
DETECTOR=${DETECTOR:-}
REF=${REF:-$DATA}
FID_ARGS=${FID_ARGS:-}
JOBS=${JOBS:-1}

# the sharded commands (train, hessian, landscape, perturb, sample) run under torchrun when NPROC > 1
fk() {
  if [ "$NPROC" -gt 1 ]; then
    torchrun --standalone --nproc-per-node "$NPROC" -m flatkit.cli "$@"
  else
    flatkit "$@"
  fi
}

train_run() {  # $1: adm | ip | sam
  local run=$1 dir=$OUT/train/$1 extra=()
  case $run in
    adm) ;;
    ip) extra=(--ip-gamma "$IP_GAMMA") ;;
    sam) extra=(--sam-rho "$SAM_RHO") ;;
    *) echo "ARMS: unknown run '$run' (adm, ip, sam)" >&2; exit 2 ;;
  esac
  local args=(train --data "$DATA" --preset "$PRESET" --steps "$STEPS" --batch-size "$BATCH" --ema "$EMA"
              --no-ema-warmup --swa-start "$SWA_START" --swa-every "$SWA_EVERY" --save-every "$SAVE_EVERY"
              --device "$DEVICE" --out "$dir" "${extra[@]}")
  # shellcheck disable=SC2206
  args+=($TRAIN_ARGS)
  if [ -f "$dir/ckpt.pt" ]; then  # a rerun resumes an interrupted training and skips a finished one
    local step
    step=$(flatkit info "$dir/ckpt.pt" --json | python -c "import json,sys; print(json.load(sys.stdin)['step'])")
    if [ "$step" -ge "$STEPS" ]; then echo "$dir: already trained to step $step"; return; fi
    args+=(--resume)
  fi
  fk "${args[@]}"
}

analyse_arm() {  # $1: RUN:WEIGHTS
  local run=${1%%:*} w=${1#*:}
  local c=$OUT/train/$run/ckpt.pt r=$OUT/results/$run-$w
  local a=(--weights "$w" --device "$DEVICE" --out "$r")
  local bank=(--n-eval "$NEVAL" --batch-size "$EVAL_BATCH")
  local samp=(--n "$N" --sampling-steps "$ROBUST_STEPS" --no-progress)
  mkdir -p "$r"
  # flatness
  fk hessian "$c" "${a[@]}" "${bank[@]}" --top-k "$TOPK" --tol 1e-2 --trace --trace-rtol 0.05 \
    --trace-max-hvps "$TRACE_HVPS"
  flatkit sharpness "$c" "${a[@]}" "${bank[@]}" --kind keskar --eps 1e-3 --ascent-steps "$SHARP_STEPS"
  fk landscape "$c" "${a[@]}" "${bank[@]}" --points "$POINTS"
  fk perturb "$c" "${a[@]}" "${bank[@]}" --radii "$RADII" --n-directions "$PERTURB_K"
  # what flatness buys
  flatkit prior "$c" "${a[@]}" "${samp[@]}" --shift 0,0.5 --scale 1,1.2 --n-ref "$N_REF" --n-eval "$NEVAL"
  flatkit exposure "$c" "${a[@]}" "${samp[@]}"
  flatkit quantize "$c" "${a[@]}" "${samp[@]}" --bits "$BITS" --n-ref "$N_REF" --n-eval "$NEVAL"
  # sample quality at each T'
  local t fid_extra=()
  [ -n "$DETECTOR" ] && fid_extra=(--detector "$DETECTOR" --ref-cache "$OUT/fid_ref_stats.npz")
  # shellcheck disable=SC2206
  fid_extra+=($FID_ARGS)
  for t in $TPRIME; do
    fk sample "$c" --weights "$w" --device "$DEVICE" --num-samples "$FID_N" --sampling-steps "$t" --sampler "$SAMPLER" \
      --batch-size "$SAMPLE_BATCH" --no-progress --out "$r/t$t"
    flatkit fid "$r/t$t/samples.npz" "$REF" "${fid_extra[@]}" --device "$DEVICE" --no-progress --out "$r/t$t"
  done
  echo "$r: done"
}

mkdir -p "$OUT"
runs=$(for arm in $ARMS; do echo "${arm%%:*}"; done | sort -u)
for run in $runs; do train_run "$run"; done

running=0
for arm in $ARMS; do
  if [ "$JOBS" -gt 1 ]; then
    analyse_arm "$arm" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
  else
    analyse_arm "$arm"
  fi
done
while [ "$running" -gt 0 ]; do wait -n; running=$((running - 1)); done

results=()
for arm in $ARMS; do results+=("$OUT/results/${arm%%:*}-${arm#*:}"); done
flatkit figures "${results[@]}" --out "$OUT/figures"
echo
cat "$OUT/figures/tables.md"
