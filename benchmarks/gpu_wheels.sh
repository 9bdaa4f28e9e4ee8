#!/usr/bin/env bash
# The wheel the device image lacks, downloaded here into .wheels/ (git-ignored) and carried with
# `run(carry=[".wheels"])`; benchmarks/gpu.py's docstring has the command that installs it there.
# The image has torch, typer, rich, safetensors, numpy, matplotlib, onnxruntime and
# opencv-python-headless (the face guard), and no registry. It lacks PyAV (av, 35 MB: ppar probes,
# decodes and encodes through it). decord is not needed (ppar falls back from it), nor is
# imageio-ffmpeg (the tests' clip maker; its 68 MB wheel would not fit the 64 MiB carried with the
# repository, 27 MB). `bash benchmarks/gpu_wheels.sh py-spy` adds py-spy (3 MB), which
# gpu.py --profile uses; the repository, PyAV, py-spy and .gpuclips then come to 63.8 MiB (of the 64 MiB carried).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .wheels
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d .wheels av "$@"
ls -la .wheels
