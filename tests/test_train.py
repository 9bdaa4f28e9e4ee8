import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from ppar_cli.research.args import TrainArgs
from ppar_cli.research.synth import generate
from ppar_cli.research.train import grl_coeff, separation_loss, train

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


@pytest.mark.slow
def test_separation_loss_is_the_attention_mass_on_the_other_mask():
    import torch

    attn = torch.tensor([[[0.5, 0.25, 0.25, 0.0]]])  # (B=1, one pruning block, N=4)
    other = torch.tensor([[0.0, 3.0, 1.0, 7.0]])  # pixels of the other mask per tubelet
    assert separation_loss(attn, other).item() == pytest.approx(0.5)
    assert separation_loss(attn, torch.tensor([[9.0, 0, 0, 0]])).item() == pytest.approx(0.5)
    assert separation_loss(attn, torch.zeros(1, 4)).item() == 0.0


def test_resume_gives_the_same_result(bench, tmp_path):
    train(_args(bench, tmp_path, "full"), log=lambda m: None)
    part = _args(bench, tmp_path, "part", stop_after=1)
    train(part, log=lambda m: None)
    assert not os.path.exists(part.out)  # stopped after one epoch: no final weights yet
    assert json.loads((tmp_path / "part" / "state.json").read_text())["epoch"] == 1
    train(_args(bench, tmp_path, "part"), log=lambda m: None)
    a, b = load_file(str(tmp_path / "full.safetensors")), load_file(str(tmp_path / "part.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


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

    def fails(args, log):
        torch.use_deterministic_algorithms(True)  # as _train does on CUDA
        raise RuntimeError("stopped")

    monkeypatch.setattr(tr, "_train", fails)
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError, match="stopped"):
        train(TrainArgs(data=""))
    assert not torch.are_deterministic_algorithms_enabled()
