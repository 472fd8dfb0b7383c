#!/usr/bin/env bash
# For whoever has a machine with a real NVIDIA GPU: checks the NVML calls the llmfleet power agent
# relies on and runs one agent pass on the GPU (e2e/gpu/power_agent_check.py says what each step
# checks). It changes the GPU's power limit for a few seconds and restores it.
# Needs: the NVIDIA driver (libnvidia-ml.so.1), root (setting a power limit needs CAP_SYS_ADMIN),
# and the repository's virtualenv (.venv, as in the README); nvidia-smi is used to cross-check
# when present.
#   Usage: sudo e2e/gpu/power_agent_check.sh [--gpu INDEX] [--skip-agent]
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
if [ "$(id -u)" != 0 ]; then
    echo "power_agent_check: run as root (setting a GPU power limit needs CAP_SYS_ADMIN)" >&2
    exit 1
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=index,uuid,name,power.limit,enforced.power.limit,power.default_limit,power.min_limit,power.max_limit,power.draw \
        --format=csv
fi
exec "$python" "$repo/e2e/gpu/power_agent_check.py" "$@"
