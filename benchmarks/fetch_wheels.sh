#!/usr/bin/env bash
# Download, on a machine with PyPI access, the wheels benchmarks/gpu.sh needs on an offline GPU machine whose image
# has torch/transformers/accelerate but not `datasets` (Python 3.12, x86-64). Writes them to ${WHEELS:-.whl}.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^set /p' "$0" | sed -n 's/^# \{0,1\}//p'; exit 0 ;; esac
cd "$(dirname "$0")/.."
dest="${WHEELS:-.whl}"
mkdir -p "$dest"
for pkg in datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$dest" "$pkg"
done
ls -1 "$dest"
