#!/usr/bin/env bash
# Create (or reuse) the project-local virtual environment .venv and install exactflow into it.
# PyTorch is pinned to the CPU build first, so that resolving exactflow's own torch range never
# pulls a CUDA build. Safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
quiet_pip() {
    # pip's notes about unused local index folders are noise here.
    .venv/bin/pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "WARNING: Location" >&2)
}
quiet_pip "torch==2.13.0"
quiet_pip -e ".${extras:+[$extras]}"
# The tests read Debian's Fashion-MNIST where it is installed (and skip, saying so, where not):
# install it when this script may (root with apt-get), as CI's machine is.
if [[ "$extras" == *test* ]] && [ ! -d /usr/share/datasets/fashion-mnist ] \
    && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } > /dev/null 2>&1 \
        || echo "note: Debian's dataset-fashion-mnist could not be installed; its tests will skip" >&2
fi
