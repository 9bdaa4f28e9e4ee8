"""The pretrained image stem: torchvision's MobileNetV2 layout converted (batch norms folded, input
normalisation matched) computes what the original layers compute, and the `real` preset uses it."""
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ppar_cli.core.config import PRESETS, PPARConfig
from ppar_cli.core.model import PPARModel
from ppar_cli.core.stem import BLOCKS, MobileNetStem
from ppar_cli.research.pretrained import IMAGENET_MEAN, IMAGENET_STD, mobilenet_v2_stem
from ppar_cli.research.train import _load_stem


def torchvision_layout(seed=0) -> dict:
    """Random weights under torchvision's mobilenet_v2 key names (features.0-6), with non-trivial batch norms."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def bn(name, c):
        sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        sd[f"{name}.running_var"] = 1 + 0.1 * torch.rand(c, generator=g)
        sd[f"{name}.num_batches_tracked"] = torch.tensor(7)

    sd["features.0.0.weight"] = 0.3 * torch.randn(32, 3, 3, 3, generator=g)
    bn("features.0.1", 32)
    cin = 32
    for i, (e, c, _) in enumerate(BLOCKS):
        pre, h, j = f"features.{i + 1}.conv", cin * e, 0
        if e != 1:
            sd[f"{pre}.0.0.weight"] = 0.3 * torch.randn(h, cin, 1, 1, generator=g)
            bn(f"{pre}.0.1", h)
            j = 1
        sd[f"{pre}.{j}.0.weight"] = 0.3 * torch.randn(h, 1, 3, 3, generator=g)
        bn(f"{pre}.{j}.1", h)
        sd[f"{pre}.{j + 1}.weight"] = 0.3 * torch.randn(c, h, 1, 1, generator=g)
        bn(f"{pre}.{j + 2}", c)
        cin = c
    return sd


def reference(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """torchvision's features[:7] written out: conv, batch norm (eval), ReLU6."""
    def bn(t, n):
        return F.batch_norm(t, sd[f"{n}.running_mean"], sd[f"{n}.running_var"], sd[f"{n}.weight"], sd[f"{n}.bias"], False, 0, 1e-5)

    x = F.relu6(bn(F.conv2d(x, sd["features.0.0.weight"], stride=2, padding=1), "features.0.1"))
    cin = 32
    for i, (e, c, s) in enumerate(BLOCKS):
        pre, h, j = f"features.{i + 1}.conv", x, 0
        if e != 1:
            h, j = F.relu6(bn(F.conv2d(h, sd[f"{pre}.0.0.weight"]), f"{pre}.0.1")), 1
        w = sd[f"{pre}.{j}.0.weight"]
        h = F.relu6(bn(F.conv2d(h, w, stride=s, padding=1, groups=w.shape[0]), f"{pre}.{j}.1"))
        h = bn(F.conv2d(h, sd[f"{pre}.{j + 1}.weight"]), f"{pre}.{j + 2}")
        x, cin = (x + h if s == 1 and cin == c else h), c
    return x


def test_converted_stem_matches_the_original_layers(tmp_path):
    sd = torchvision_layout()
    torch.save(sd, tmp_path / "mobilenet_v2.pth")  # the layout of torchvision's file (plain tensors)
    stem = MobileNetStem()
    stem.load_state_dict(mobilenet_v2_stem(tmp_path / "mobilenet_v2.pth"))
    img = torch.rand(2, 3, 128, 128)
    ours = stem((img - 0.45) / 0.25)
    theirs = reference(sd, (img - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
    assert ours.shape == (2, 32, 16, 16)
    # zero padding means ppar's mean colour here and ImageNet's there; with even sizes the stride-2
    # convolutions pad only the top and left, so the bottom-right outputs see no padding at all
    assert torch.allclose(ours[..., 8:, 8:], theirs[..., 8:, 8:], atol=1e-3, rtol=1e-4)
    assert not torch.allclose(ours, theirs, atol=1e-3)  # the test can tell a difference


def test_real_preset_has_a_14x14_grid_and_takes_the_stem(tmp_path):
    sd = torchvision_layout(1)
    torch.save(sd, tmp_path / "m.pth")
    save_file(mobilenet_v2_stem(tmp_path / "m.pth"), str(tmp_path / "stem.safetensors"))
    cfg = PPARConfig(**{**PRESETS["real"], "depth": 2, "prune_blocks": (1, 2)}, actions=["a", "b"])
    model = PPARModel(cfg)
    _load_stem(model, tmp_path / "stem.safetensors")
    assert torch.equal(model.embed.stem.first.bias, mobilenet_v2_stem(tmp_path / "m.pth")["first.bias"])
    out = model(torch.randn(1, 3, cfg.frames, 112, 112), keep_ratio=0.5)
    assert cfg.grid == (4, 14, 14) and out.kept.shape == (1, 4, 14, 14) and int(out.kept.sum()) == 392


def test_weights_of_0_2_still_load():
    cfg = PPARConfig.from_json('{"conv_stem": false, "frame_diff": false}')
    assert cfg.stem == "linear"
