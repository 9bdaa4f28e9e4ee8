#!/usr/bin/env bash
# A few small real clips (people: signing, cooking, make-up, a fight on a surveillance camera) from
# ../shared/data into .gpuclips/ (git-ignored), carried with `run(carry=[".wheels", ".gpuclips"])`:
# the device sees only the repository, and benchmarks/gpu.py compares the kept masks of the GPU and
# the CPU on real footage, where near-ties are real, not only on synthetic clips.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=../shared/data
mkdir -p .gpuclips
for f in real/book.mkv real/help.mkv real/please.mkv real/walk.mkv real/kinetics_flipping_pancake.mkv \
         real/ucf101_v_ApplyEyeMakeup_g01_c01.avi real-train/fight/fi001.mp4 real-train/fight/fi002.mp4; do
  cp "$shared/$f" .gpuclips/
done
du -sh .gpuclips
