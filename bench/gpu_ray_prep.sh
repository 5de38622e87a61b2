#!/usr/bin/env bash
# Before the device call of bench/gpu_ray.py, on the dev machine from the repo root (after bench/GPU.md's `.whl/` and
# `.gpu/` steps): Ray 2.60.0 for the GPU image's Python 3.12, packed small into `.ray/` (gitignored via .git/info/exclude).
set -euo pipefail
X="$(git rev-parse --git-common-dir)/info/exclude"; grep -qx '/.ray/' "$X" 2>/dev/null || printf "/.ray/\n/.ray-dl/\n" >> "$X"
P="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux1_x86_64"
rm -rf .ray-dl .ray && mkdir -p .ray-dl
pip download -q $P -d .ray-dl ray==2.60.0
# what the image already has (torch, transformers) and what .whl/ brings is not carried twice
for w in .ray-dl/*.whl; do
  n=$(basename "$w" | cut -d- -f1 | tr 'A-Z_' 'a-z-')
  case "$n" in filelock|packaging|pyyaml|typing-extensions) rm "$w";; esac  # torch and transformers need these too
  ls .whl 2>/dev/null | tr 'A-Z_' 'a-z-' | grep -q "^$n-" && rm -f "$w" || true
done
python bench/pack_ray.py .ray-dl .ray
rm -rf .ray-dl
du -sh .ray .whl .gpu 2>/dev/null || true
