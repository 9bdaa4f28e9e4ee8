"""`ppar train --init`: public pretrained ViTs (timm and Hugging Face layouts, VideoMAE) mapped onto
ppar's blocks reproduce the reference model's hidden states (random models built offline)."""
import pytest
import torch
from safetensors.torch import save_file

from ppar_cli.core.config import PPARConfig
from ppar_cli.core.model import PPARModel
from ppar_cli.errors import DataError
from ppar_cli.research.pretrained import init_from_pretrained

transformers = pytest.importorskip("transformers", reason="the reference models come from transformers (dev extra)")

DIM, DEPTH, HEADS = 64, 2, 4


def ppar_model(frames=4, **kw) -> PPARModel:
    cfg = PPARConfig(frames=frames, frame_stride=2, image_size=32, tubelet=(2, 16, 16), dim=DIM, depth=DEPTH, heads=HEADS,
                     stem="linear", frame_diff=False, prune_blocks=(1, 2), actions=["a", "b"], **kw)
    torch.manual_seed(1)
    return PPARModel(cfg)


def run_blocks(model: PPARModel, tokens: torch.Tensor, norm: bool) -> torch.Tensor:
    """ppar's blocks (pruning off) on a token sequence the reference model built."""
    x = tokens
    for blk in model.blocks:
        x = blk(x)
    return model.norm(x) if norm else x


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=4 * DIM,
                                 image_size=32, patch_size=16, layer_norm_eps=1e-5)
    return transformers.ViTModel(cfg, add_pooling_layer=False).eval()


def hf_classic(sd: dict) -> dict:
    """The layout of the ViT checkpoints published on the Hub (transformers 4), with the `vit.` prefix."""
    out = {}
    for k, v in sd.items():
        k = k.replace("layers.", "encoder.layer.").replace("attention.q_proj", "attention.attention.query")
        k = k.replace("attention.k_proj", "attention.attention.key").replace("attention.v_proj", "attention.attention.value")
        k = k.replace("attention.o_proj", "attention.output.dense").replace("mlp.fc1", "intermediate.dense")
        k = k.replace("mlp.fc2", "output.dense")
        out["vit." + k] = v
    return out


def timm_layout(sd: dict) -> dict:
    """The same weights under timm's vision_transformer names (hand-written, as the issue asks)."""
    out = {"cls_token": sd["embeddings.cls_token"], "pos_embed": sd["embeddings.position_embeddings"],
           "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"]}
    for i in range(DEPTH):
        p = f"layers.{i}"
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([sd[f"{p}.attention.{n}_proj.weight"] for n in "qkv"])
        out[f"blocks.{i}.attn.qkv.bias"] = torch.cat([sd[f"{p}.attention.{n}_proj.bias"] for n in "qkv"])
        for ours, theirs in (("attn.proj", "attention.o_proj"), ("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                             ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            out[f"blocks.{i}.{ours}.weight"], out[f"blocks.{i}.{ours}.bias"] = sd[f"{p}.{theirs}.weight"], sd[f"{p}.{theirs}.bias"]
    return out


@pytest.mark.parametrize("layout", ["hf_v5", "hf_classic", "timm"])
def test_image_vit_reproduces_the_reference_hidden_states(tmp_path, vit, layout):
    sd = {k: v.contiguous() for k, v in vit.state_dict().items()}
    sd = {"hf_v5": sd, "hf_classic": hf_classic(sd), "timm": timm_layout(sd)}[layout]
    save_file(sd, str(tmp_path / "w.safetensors"))
    model = ppar_model()
    report = init_from_pretrained(model, tmp_path / "w.safetensors")
    assert report["fresh"] == ["action_head.bias", "action_head.weight", "privacy_head.bias", "privacy_head.weight"]
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = vit(pixel_values=img)
        tokens = vit.embeddings(img)
        ours = run_blocks(model, tokens, norm=True)
        assert torch.allclose(ours, ref.last_hidden_state, atol=1e-4)
        # a video of one repeated image: averaged inflation gives the image's patch tokens in every slab
        video = img[:, :, None].repeat(1, 1, 4, 1, 1)
        embedded = model.embed(video) + model.pos
        patches = tokens[:, 1:]
        assert torch.allclose(embedded[:, :4], patches, atol=1e-5) and torch.allclose(embedded[:, 4:], patches, atol=1e-5)
    assert torch.equal(model.cls[0, 0], model.cls[0, 1]) and torch.equal(model.cls[0, 0], vit.embeddings.cls_token[0, 0])


def test_central_inflation_puts_the_image_filter_in_one_frame(tmp_path, vit):
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model = ppar_model()
    init_from_pretrained(model, tmp_path / "w.safetensors", inflation="central")
    w = model.embed.proj.weight
    assert torch.equal(w[:, :, 1], vit.embeddings.patch_embeddings.projection.weight) and not w[:, :, 0].any()


def test_videomae_reproduces_the_reference_hidden_states(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.VideoMAEConfig(hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                                      intermediate_size=4 * DIM, image_size=32, patch_size=16, num_frames=4, tubelet_size=2,
                                      layer_norm_eps=1e-5)
    ref_model = transformers.VideoMAEModel(cfg).eval()
    save_file({k: v.contiguous() for k, v in ref_model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model = ppar_model()
    report = init_from_pretrained(model, tmp_path / "w.safetensors")
    assert report["layout"] == "Hugging Face VideoMAE" and report["pos"] == "VideoMAE sinusoid table"
    video = torch.randn(1, 4, 3, 32, 32)  # VideoMAE takes (B, T, C, H, W)
    with torch.no_grad():
        ref = ref_model(pixel_values=video).last_hidden_state
        tokens = model.embed(video.transpose(1, 2)) + model.pos  # ppar's embedding with the sinusoid table
        assert torch.allclose(tokens, ref_model.embeddings(video, None), atol=1e-5)
        assert torch.allclose(run_blocks(model, tokens, norm=False), ref, atol=1e-4)


def test_mismatched_checkpoint_is_one_clear_error(tmp_path, vit):
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "w.safetensors"))
    cfg_model = PPARModel(PPARConfig(frames=4, image_size=32, tubelet=(2, 16, 16), dim=DIM, depth=3, heads=HEADS, stem="linear",
                                     frame_diff=False, prune_blocks=(1, 2), actions=["a"]))
    with pytest.raises(DataError, match="depth 2, the config has 3"):
        init_from_pretrained(cfg_model, tmp_path / "w.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.safetensors"):
        init_from_pretrained(ppar_model(), tmp_path / "junk.safetensors")


def test_train_init_records_what_was_loaded(tmp_path, vit):
    import json

    from ppar_cli.research.args import TrainArgs
    from ppar_cli.research.synth import generate
    from ppar_cli.research.train import train

    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "deit.safetensors"))
    generate(tmp_path / "bench", 8, seed=3, size=32, frames=8, workers=1)
    cfg = {"frames": 4, "frame_stride": 2, "image_size": 32, "tubelet": [2, 16, 16], "dim": DIM, "depth": DEPTH,
           "heads": HEADS, "stem": "linear", "frame_diff": False, "prune_blocks": [1, 2]}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    args = TrainArgs(data=str(tmp_path / "bench"), config=str(tmp_path / "cfg.json"), epochs=1, batch_size=4,
                     out=str(tmp_path / "w.safetensors"), run_dir=str(tmp_path / "run"), init=str(tmp_path / "deit.safetensors"))
    train(args, log=lambda m: None)
    from ppar_cli.core.weights import load_weights

    prov = load_weights(tmp_path / "w.safetensors").provenance
    assert prov["init"]["layout"] == "Hugging Face ViT" and prov["init"]["inflation"] == "average"
