import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from ppar_cli.research.args import TrainArgs
from ppar_cli.research.synth import generate
from ppar_cli.research.train import grl_coeff, rank_loss, separation_loss, train

TINY = {"frames": 4, "image_size": 32, "tubelet": [2, 8, 8], "dim": 32, "depth": 2, "heads": 2, "prune_blocks": [1, 2]}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, 16, seed=11, size=48, frames=12, workers=1)
    cfg = root / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    return root


def test_grl_ramp():
    assert grl_coeff(0) == 0 and grl_coeff(1) == pytest.approx(0.9999092) and grl_coeff(5) == grl_coeff(1)


def _args(bench, tmp_path, name, **kw):
    return TrainArgs(data=str(bench), config=str(bench / "tiny.json"), epochs=2, batch_size=4, seed=3,
                     out=str(tmp_path / f"{name}.safetensors"), run_dir=str(tmp_path / name), **kw)


@pytest.mark.parametrize("bad,said", [({"epochs": 0}, "epochs must be a whole number of at least 1"),
                                      ({"batch_size": 0}, "batch_size must be"), ({"accum": 0}, "accum must be"),
                                      ({"stop_after": 0}, "stop_after must be"), ({"lr": 0.0}, "lr must be a number above 0"),
                                      ({"lr": float("nan")}, "lr must be"), ({"mask_weight": float("nan")}, "mask_weight must be"),
                                      ({"separation_weight": -1.0}, "separation_weight must be"),
                                      ({"crop_scale": 0.0}, "crop_scale must lie in"), ({"init_inflation": "first"}, "init_inflation must be")])
def test_arguments_that_would_crash_or_train_nothing_are_refused_before_any_work(tmp_path, bad, said):
    """A batch of 0 ended in ZeroDivisionError, 0 epochs saved untrained weights, a NaN loss weight
    NaN weights: each is refused before the data is read (here there is none) and leaves nothing."""
    from ppar_cli.errors import UsageError

    with pytest.raises(UsageError, match=said):
        train(TrainArgs(data=str(tmp_path / "nowhere"), out=str(tmp_path / "w.safetensors"), run_dir=str(tmp_path / "run"), **bad))
    assert list(tmp_path.iterdir()) == []


def test_a_benchmark_without_a_test_split_is_named_before_decoding(tmp_path):
    """A CSV without test rows ended in "need at least one array to stack" after decoding the rest."""
    from ppar_cli.errors import DataError

    (tmp_path / "d.csv").write_text("path,action\nnowhere.mp4,run\n")
    with pytest.raises(DataError, match=r"d.csv: no test videos: every epoch is evaluated on the test split \(in a CSV, rows with split=test\)"):
        train(TrainArgs(data=str(tmp_path / "d.csv"), format="csv", out=str(tmp_path / "w.safetensors"), run_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_separation_loss_is_the_attention_mass_on_the_other_mask():
    import torch

    attn = torch.tensor([[[0.5, 0.25, 0.25, 0.0]]])  # (B=1, one pruning block, N=4)
    other = torch.tensor([[0.0, 3.0, 1.0, 7.0]])  # pixels of the other mask per tubelet
    assert separation_loss(attn, other).item() == pytest.approx(0.5)
    assert separation_loss(attn, torch.tensor([[9.0, 0, 0, 0]])).item() == pytest.approx(0.5)
    assert separation_loss(attn, torch.zeros(1, 4)).item() == 0.0


def test_rank_loss_pushes_action_tubelets_above_the_median_and_heads_below():
    """The score s = a_act - lambda * a_priv, standardised over the live tubelets: the loss is low
    where the action tubelet scores above the median and the head below, higher the other way
    round; a pruned tubelet (attention 0) counts for nothing, its gradient raises the action
    tubelet's score and lowers the head's."""
    import torch

    pixels = torch.tensor([[[5.0, 0, 0, 0, 0], [0, 4.0, 0, 0, 0]]])  # (B=1, privacy/action, N=5): head 0, hand 1
    def loss(a_act, a_priv):
        return rank_loss(torch.tensor([[a_act]]), torch.tensor([[a_priv]]), pixels, 0.5)

    right = loss([0.1, 0.4, 0.2, 0.3, 0.0], [0.6, 0.1, 0.1, 0.2, 0.0])  # tubelet 4 pruned
    wrong = loss([0.4, 0.1, 0.2, 0.3, 0.0], [0.1, 0.6, 0.1, 0.2, 0.0])
    assert right.item() < 0.4 < 1.0 < wrong.item()
    assert loss([0.1, 0.4, 0.2, 0.3, 0.0], [0.6, 0.1, 0.1, 0.2, 0.9]).item() == pytest.approx(right.item())  # pruned: ignored
    a_act = torch.tensor([[[0.2, 0.2, 0.2, 0.4, 0.0]]], requires_grad=True)
    a_priv = torch.tensor([[[0.25, 0.25, 0.25, 0.25, 0.0]]], requires_grad=True)
    rank_loss(a_act, a_priv, pixels, 0.5).backward()
    assert a_act.grad[0, 0, 1] < 0 < a_act.grad[0, 0, 0] and a_priv.grad[0, 0, 0] < 0
    assert a_act.grad[0, 0, 4] == 0


@pytest.mark.parametrize("crop", [1.0, 0.7])
def test_resume_gives_the_same_result(bench, tmp_path, crop):
    train(_args(bench, tmp_path, "full", crop_scale=crop, mask_weight=1.0), log=lambda m: None)
    part = _args(bench, tmp_path, "part", stop_after=1, crop_scale=crop, mask_weight=1.0)
    train(part, log=lambda m: None)
    assert not os.path.exists(part.out)  # stopped after one epoch: no final weights yet
    assert json.loads((tmp_path / "part" / "state.json").read_text())["epoch"] == 1
    stages: dict[str, list[int]] = {}  # the progress bars: stage -> [total, steps advanced]

    def progress(stage: str, total: int):
        stages[stage] = [total, 0]
        return lambda: stages[stage].__setitem__(1, stages[stage][1] + 1)

    train(_args(bench, tmp_path, "part", crop_scale=crop, mask_weight=1.0), log=lambda m: None, progress=progress)
    assert list(stages) == ["decoding training videos", "decoding test videos", "epoch 2/2"], stages  # resumed at 2
    assert all(total == done > 0 for total, done in stages.values()), stages
    a, b = load_file(str(tmp_path / "full.safetensors")), load_file(str(tmp_path / "part.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


@pytest.mark.slow
def test_a_run_resumes_only_with_its_own_arguments_and_replaces_no_weights(bench, tmp_path):
    """A rerun into a run folder continues that run: other data, labels or settings would continue
    its checkpoint silently, so they are refused before any video is decoded. The data's spelling
    and the threads may differ (a run moved to another machine). An existing --out is refused at
    the start unless overwrite."""
    from ppar_cli.errors import UsageError

    train(_args(bench, tmp_path, "run", stop_after=1), log=lambda m: None)
    state = (tmp_path / "run" / "state.json").read_text()
    other = tmp_path / "other"
    generate(other, 8, seed=12, size=48, frames=12, workers=1)
    (other / "tiny.json").write_text(json.dumps(TINY))
    for args, said in ((_args(other, tmp_path, "run"), "training videos and labels"),
                       (_args(bench, tmp_path, "run", lr=2e-3), "lr 0.001 there, 0.002 now"),
                       (_args(bench, tmp_path, "run", mask_weight=1.0), "mask_weight 0.0 there, 1.0 now"),
                       (_args(bench, tmp_path, "run", overrides={"heads": 4}), r"\(config heads 2 there, 4 now\)")):
        with pytest.raises(UsageError, match=said):
            train(args, log=lambda m: pytest.fail(f"{said}: went on to {m}"))
    assert (tmp_path / "run" / "state.json").read_text() == state and not (tmp_path / "run.safetensors").exists()
    saved = json.loads(state)  # a run saved before an argument existed (rank_weight, 0.3.29) had its default
    del saved["identity"]["rank_weight"]
    (tmp_path / "run" / "state.json").write_text(json.dumps(saved))
    with pytest.raises(UsageError, match="rank_weight 0.0 there, 1.0 now"):
        train(_args(bench, tmp_path, "run", rank_weight=1.0), log=lambda m: pytest.fail(f"went on to {m}"))
    moved = _args(bench, tmp_path, "run", threads=1)
    moved.data = str(bench) + os.sep
    train(moved, log=lambda m: None)
    assert json.loads((tmp_path / "run" / "state.json").read_text())["epoch"] == 2 and os.path.exists(moved.out)
    weights = (tmp_path / "run.safetensors").read_bytes()
    fresh = _args(bench, tmp_path, "again")  # a new run whose weights would replace the first's
    fresh.out = moved.out
    with pytest.raises(UsageError, match="run.safetensors: already exists"):
        train(fresh, log=lambda m: pytest.fail(f"went on to {m}"))
    assert (tmp_path / "run.safetensors").read_bytes() == weights and not (tmp_path / "again").exists()
    train(_args(bench, tmp_path, "run", overwrite=True), log=lambda m: None)  # the finished run, saved again


def test_an_out_that_is_a_folder_or_a_run_dir_that_is_a_file_is_refused_before_training(bench, tmp_path):
    from ppar_cli.errors import UsageError

    (tmp_path / "file").write_text("mine")
    for kw, said in ((dict(out=str(tmp_path), overwrite=True), "a folder; out names the weights file"),
                     (dict(run_dir=str(tmp_path / "file")), "file: a file, not a run folder")):
        args = _args(bench, tmp_path, "run")
        for k, v in kw.items():
            setattr(args, k, v)
        with pytest.raises(UsageError, match=said):
            train(args, log=lambda m: pytest.fail(f"went on to {m}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and (tmp_path / "file").read_text() == "mine"


def test_a_pytorch_checkpoint_to_start_from_is_named_and_leaves_no_run_folder(bench, tmp_path):
    """--init and --init-stem of a torch.save file said "header too large", after the run folder was made."""
    from ppar_cli.errors import DataError

    torch.save({"w": torch.zeros(2)}, tmp_path / "w.pt")
    for kw in (dict(init=str(tmp_path / "w.pt")),
               dict(init_stem=str(tmp_path / "w.pt"), overrides={"stem": "mobilenet_v2", "tubelet": [2, 8, 8]})):
        with pytest.raises(DataError, match="w.pt: a PyTorch checkpoint"):
            train(_args(bench, tmp_path, "run", **kw), log=lambda m: pytest.fail(f"went on to {m}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]


@pytest.mark.slow
def test_training_on_videos_read_from_their_files_equals_training_on_held_ones(bench, tmp_path, monkeypatch):
    """Where the frames do not fit in memory, training reads each batch's windows from the files
    (ahead of the model, in threads): the same run, to the bit, as with every frame held."""
    import ppar_cli.research.data as data
    import ppar_cli.research.train as tr

    train(_args(bench, tmp_path, "held", crop_scale=0.7, mask_weight=1.0), log=lambda m: None)
    for module in (data, tr):  # the training set's memory is train's to give, the validation set's its own
        monkeypatch.setattr(module, "memory_free", lambda: 0)
    reads, read = [], data.VideoFrames.__getitem__
    monkeypatch.setattr(data.VideoFrames, "__getitem__", lambda self, window: reads.append(window) or read(self, window))
    train(_args(bench, tmp_path, "read", crop_scale=0.7, mask_weight=1.0), log=lambda m: None)
    assert len(reads) > 16  # every training and validation window of this run came from the files
    a, b = load_file(str(tmp_path / "held.safetensors")), load_file(str(tmp_path / "read.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_ranks_on_one_machine_share_its_memory_for_frames(bench, tmp_path, monkeypatch):
    """Under torchrun every rank holds the frames of every video it can (its shard changes each
    epoch): with 4 ranks on a machine, each may hold a quarter of what one process would."""
    import ppar_cli.research.train as tr

    holds = []
    monkeypatch.setattr(tr, "memory_free", lambda: 10 * 2**30)
    monkeypatch.setattr(tr, "memory", lambda: 8 * 2**30)  # a quarter of it stays free: 8 GiB may hold frames
    monkeypatch.setattr(tr, "ClipSet", lambda *a, hold=None, **k: holds.append(hold) or pytest.fail("stop"))
    for ranks in ("1", "4"):
        monkeypatch.setenv("LOCAL_WORLD_SIZE", ranks)
        with pytest.raises(pytest.fail.Exception, match="stop"):
            train(_args(bench, tmp_path, f"r{ranks}"), log=lambda m: None)
    assert holds == [8 * 2**30, 2 * 2**30]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(bench, tmp_path):
    """11 training videos in batches of 5 on 2 ranks: 6 and 5 clips, 2 and 1 batches unless the
    shards are equalised (unequal shards hang in DDP's all-reduce: the timeout fails the test)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "ppar_cli.cli", "train", "--data", str(bench), "--config", str(bench / "tiny.json"), "--epochs", "1",
           "--batch-size", "5", "--out", str(tmp_path / "ddp.safetensors"), "--run-dir", str(tmp_path / "ddp")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[:3000] + "\n...\n" + r.stderr[-1500:]
    assert (tmp_path / "ddp.safetensors").exists()
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == 1  # rank 0 alone logs


def test_deterministic_kernels_last_only_as_long_as_the_run(monkeypatch):
    """On CUDA training requires deterministic kernels; what the process runs afterwards (the full
    protocol's evaluation in `ppar paper`) gets the setting it had, also when training fails."""
    import torch

    import ppar_cli.research.train as tr

    def fails(args, log, progress):
        torch.use_deterministic_algorithms(True)  # as _train does on CUDA
        raise RuntimeError("stopped")

    monkeypatch.setattr(tr, "_train", fails)
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError, match="stopped"):
        train(TrainArgs(data=""))
    assert not torch.are_deterministic_algorithms_enabled()


def test_cropped_clips_and_their_mask_counts_stay_aligned():
    """--crop-scale: a bright square marked in the masks (at their own, wider resolution, as the
    pseudo masks are) must fall in the same tubelets of every cropped clip as its pixels do."""
    import numpy as np

    from ppar_cli.core.config import PPARConfig
    from ppar_cli.research.data import ClipSet, random_crop

    cfg = PPARConfig(frames=4, frame_stride=1, image_size=64, tubelet=(2, 8, 8))
    frames = np.zeros((6, 64, 64, 3), np.uint8)
    frames[:, 40:56, 8:24] = 255
    mask = np.zeros((6, 128, 192), bool)  # the same square at 2x the rows and 3x the columns
    mask[:, 80:112, 24:72] = True
    clips = ClipSet.__new__(ClipSet)
    clips.cfg, clips.frames = cfg, [frames]
    clips.priv = clips.act = [np.zeros((6, 8, 8), np.int32)]
    clips.packed = [(np.packbits(mask, axis=-1), np.packbits(~mask, axis=-1), 192)]
    full = clips.counts(0, 1, (0, 64, 0, 64))[0].reshape(2, 8, 8)
    assert (full[0, 5:7, 1:3] == 2 * 32 * 48 // 4).all() and full.sum() == 2 * 2 * 32 * 48
    rng = np.random.default_rng(0)
    for _ in range(20):
        box = random_crop(rng, 64, 0.5)
        y0, y1, x0, x1 = box
        assert 0 <= y0 < y1 <= 64 and 0 <= x0 < x1 <= 64 and min(y1 - y0, x1 - x0) >= 32
        priv, act = clips.counts(0, 1, box)
        bright = clips.clip(0, 1, box)[..., 0].reshape(2, 2, 8, 8, 8, 8).mean((1, 3, 5)).reshape(-1)
        if priv.sum() == 0:  # the crop missed the square
            assert bright.max() < 10
            continue
        share = priv / (priv + act)
        assert np.corrcoef(share, bright)[0, 1] > 0.95, box


def test_init_from_ppar_weights_fine_tunes_them(bench, tmp_path):
    """`ppar train --init W --config W`: every tensor of ppar weights W, the heads only where the
    labels are W's; another architecture is one error naming the fix."""
    from dataclasses import replace

    import torch

    from ppar_cli.core.model import PPARModel
    from ppar_cli.core.weights import load_weights
    from ppar_cli.errors import DataError
    from ppar_cli.research.pretrained import init_from_pretrained

    base = replace(_args(bench, tmp_path, "base"), epochs=1)
    train(base, log=lambda m: None)
    src = load_weights(base.out).model
    same = PPARModel(src.cfg)
    report = init_from_pretrained(same, base.out)
    assert report["layout"] == "ppar weights" and report["fresh"] == []
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), src.state_dict().values()))
    other_labels = PPARModel(replace(src.cfg, actions=["x", "y"]))
    assert init_from_pretrained(other_labels, base.out)["fresh"] == ["action_head.bias", "action_head.weight"]
    assert torch.equal(other_labels.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    for other in (replace(src.cfg, dim=16), replace(src.cfg, stem="linear"), replace(src.cfg, depth=1, prune_blocks=(1,))):
        with pytest.raises(DataError, match=f"--config {base.out}"):
            init_from_pretrained(PPARModel(other), base.out)
    tuned = replace(_args(bench, tmp_path, "tuned", init=base.out), epochs=1, config=base.out)
    train(tuned, log=lambda m: None)
    assert load_weights(tuned.out).provenance["init"]["sha256"] == report["sha256"]
