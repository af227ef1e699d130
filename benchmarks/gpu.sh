#!/usr/bin/env bash
# One command measures a CUDA machine (run it as `./run bash benchmarks/gpu.sh`):
#   1. benchmarks/speed.py --device cuda      the lab's loops against the project's, in one process
#   2. benchmarks/eval_batch.py --device cuda  evaluation batch sizes, auto among them
#   3. pytest -m gpu                           the tests that need CUDA (they skip elsewhere)
#   4. the synthetic profile end to end on CUDA (dvc exp run in a temporary clone of HEAD)
#   5. with 2 or more GPUs: the same profile with train.gpus=2 (torchrun, NCCL, DDP)
# Everything it prints goes to results/gpu/<card>/summary.md (the README's performance section
# points there), the profile's metrics to results/gpu/<card>/synthetic[-ddp]/. Without a CUDA GPU
# it says so and exits 0, writing nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu.sh: no CUDA GPU is visible here (torch.cuda.is_available() is False); nothing measured"
  exit 0
fi

card=$(python -c 'import torch; print(torch.cuda.get_device_name(0))')
gpus=$(python -c 'import torch; print(torch.cuda.device_count())')
slug=$(printf '%s' "$card" | tr -cs 'A-Za-z0-9' '-' | sed 's/-*$//' | tr 'A-Z' 'a-z')
out="$root/results/gpu/$slug"
mkdir -p "$out"
summary="$out/summary.md"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0

# `dvc exp run` commits experiment refs: it needs a git identity, which a GPU runner may lack.
export GIT_AUTHOR_NAME="${GIT_AUTHOR_NAME:-advlab gpu.sh}" GIT_AUTHOR_EMAIL="${GIT_AUTHOR_EMAIL:-gpu@advlab.invalid}"
export GIT_COMMITTER_NAME="${GIT_COMMITTER_NAME:-$GIT_AUTHOR_NAME}"
export GIT_COMMITTER_EMAIL="${GIT_COMMITTER_EMAIL:-$GIT_AUTHOR_EMAIL}"

step() {  # step TITLE COMMAND...: runs it, its output into the summary as a code block
  local title=$1; shift
  echo "gpu.sh: $title: $*" >&2
  { echo; echo "## $title"; echo; echo "\`$*\`"; echo; echo '```'; } >>"$summary"
  "$@" 2>&1 | tee -a "$summary"
  local code=${PIPESTATUS[0]}
  { echo '```'; [ "$code" = 0 ] || echo "**exit $code**"; } >>"$summary"
  [ "$code" = 0 ] || failed=1
}

profile() {  # profile NAME_OF_RESULTS -S ...: the synthetic profile on CUDA in the clone
  local name=$1; shift
  (cd "$work/repo" && PYTHONPATH="$work/repo" python -m advlab.experiments.profile synthetic \
     -S base.device=cuda "$@" --save "$out/$name")
}

{
  echo "# $card ($gpus visible)"
  echo
  echo "Written by \`benchmarks/gpu.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') at commit"
  echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)'),"
  echo "torch $(python -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')."
} >"$summary"
step "nvidia-smi" nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv
step "Speed against the lab as written" python benchmarks/speed.py --device cuda
step "Evaluation batch sizes" python benchmarks/eval_batch.py --device cuda
step "CUDA-only tests" python -m pytest -q -m gpu -p no:cacheprovider
git clone -q "$root" "$work/repo"
step "Synthetic profile on CUDA, end to end (dvc exp run in a clone of HEAD)" profile synthetic
if [ "$gpus" -ge 2 ]; then
  step "Synthetic profile on 2 GPUs (DDP, NCCL; dvc exp run in a clone of HEAD)" profile synthetic-ddp -S train.gpus=2
else
  { echo; echo "## DDP"; echo; echo "Not run: 1 GPU visible (needs 2)."; } >>"$summary"
fi
echo "gpu.sh: wrote $summary$([ $failed = 0 ] || echo '; some steps FAILED (see the summary)')"
exit $failed
