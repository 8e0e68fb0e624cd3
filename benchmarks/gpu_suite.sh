#!/usr/bin/env bash
# The GPU suite (benchmarks/gpu_suite.py): at most 8 minutes on one H100/H200; writes gpu_suite-<date>.md
# (and .json) in the current folder. Extra arguments go to the script (e.g. --smoke, --budget 300).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python}"
stamp="$(date +%Y%m%d-%H%M%S)"
"$python" "$here/gpu_suite.py" --out "gpu_suite-$stamp.md" --json "gpu_suite-$stamp.json" "$@"
