#!/usr/bin/env bash
# Runs the suite. pytest's exit code 5 ("no tests collected") is a failure here, on purpose:
# a suite that collects nothing has tested nothing.
set -u
py="$1"; shift
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
export TOKENIZERS_PARALLELISM=false RAY_USAGE_STATS_ENABLED=0
"$py" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "run_tests: pytest collected no tests; treating that as a failure" >&2
  exit 1
fi
exit "$rc"
