import json

import numpy as np
import pytest

from ppar_cli.core.config import PPARConfig
from ppar_cli.errors import UsageError
from ppar_cli.research.data import ClipSet, open_benchmark
from ppar_cli.research.people import Canvas, make_identities, render_video
from ppar_cli.research.synth import ACTIONS, load_masks


def test_canvas_masks_match_drawn_shapes():
    cv = Canvas(np.zeros((40, 60, 3), np.float32))
    cv.capsule(np.array([10.0, 20.0]), np.array([40.0, 20.0]), 5, (255, 0, 0), privacy=True)
    cv.disc(np.array([40.0, 20.0]), 4, (0, 255, 0), action=True)  # painted over the capsule's end
    yy, xx = np.mgrid[0:40, 0:60]
    in_disc = np.hypot(xx - 40, yy - 20) < 4 - 0.01
    in_capsule = (np.hypot(xx - np.clip(xx, 10, 40), yy - 20) < 5 - 0.01)
    assert cv.act[in_disc].all() and not cv.priv[in_disc].any()
    assert cv.priv[in_capsule & (np.hypot(xx - 40, yy - 20) > 4.5)].all()
    far = np.hypot(xx - np.clip(xx, 10, 40), yy - 20) > 6
    assert not cv.priv[far].any() and not cv.act[far].any()
    assert (cv.img[cv.priv][:, 0] > 127).all() and (cv.img[cv.act][:, 1] > 127).all()


def test_render_deterministic_and_seeded():
    ids = make_identities(3, 8)
    a = render_video(3, 5, ids, 64, 12, 25)
    b = render_video(3, 5, make_identities(3, 8), 64, 12, 25)
    c = render_video(4, 5, make_identities(4, 8), 64, 12, 25)
    assert np.array_equal(a["video"], b["video"]) and np.array_equal(a["privacy"], b["privacy"])
    assert not np.array_equal(a["video"], c["video"])
    assert a["privacy"].any() and a["video"].shape == (12, 64, 64, 3)
    # the person mask covers every privacy and action pixel, and not the whole frame
    assert not (a["privacy"] & ~a["person"]).any() and not (a["action"] & ~a["person"]).any()
    assert 0 < a["person"].mean() < 0.5


def test_generate_never_forks(tmp_path, monkeypatch):
    """Its worker processes are spawned: a child forked from a threaded caller (PyTorch's threads, a
    progress bar's) can inherit a lock held at that instant and hang."""
    import os

    from ppar_cli.research.synth import generate

    def no_fork():
        raise AssertionError("os.fork called")

    monkeypatch.setattr(os, "fork", no_fork)
    generate(tmp_path, 2, seed=1, size=32, frames=4, workers=1)
    assert len(list(tmp_path.glob("*/*.avi")) + list(tmp_path.glob("*/*.mp4"))) == 2


def test_generate_writes_into_a_folder_that_is_not_empty_only_when_told(tmp_path):
    from ppar_cli.research.synth import generate

    generate(tmp_path / "b", 2, seed=1, size=32, frames=4, workers=1)
    before = (tmp_path / "b" / "labels.json").read_text()
    with pytest.raises(UsageError, match="not empty"):
        generate(tmp_path / "b", 2, seed=2, size=32, frames=4, workers=1)
    assert (tmp_path / "b" / "labels.json").read_text() == before
    generate(tmp_path / "b", 2, seed=2, size=32, frames=4, workers=1, overwrite=True)
    assert json.loads((tmp_path / "b" / "labels.json").read_text())["seed"] == 2


def test_generate_reads_back_as_ucf101(tmp_path):
    from ppar_cli.research.synth import generate

    index = generate(tmp_path, 12, seed=5, size=64, frames=20, workers=1)
    b = open_benchmark(tmp_path)
    assert b.actions == ACTIONS and len(b.train) + len(b.test) == 12
    assert {i.key for i in b.train}.isdisjoint({i.key for i in b.test})
    for it in b.train + b.test:
        assert it.masks is not None and it.identity is not None
        assert it.attributes.tolist() == index["videos"][f"{ACTIONS[it.action]}/{it.path.name}"]["attributes"]
        p, a = load_masks(it.masks)
        assert p.shape == a.shape == (20, 64, 64)
    cfg = PPARConfig(frames=4, image_size=32, tubelet=(2, 8, 8), dim=32, depth=2, heads=2, prune_blocks=(1, 2), actions=ACTIONS)
    clips = ClipSet(b.train[:2], cfg)
    assert clips.frames[0].shape == (20, 32, 32, 3) and clips.has_masks and clips.has_person
    assert clips.person_clip(0, 0).shape == (4, 32, 32) and clips.person_clip(0, 0).any()
    priv, act = clips.counts(0, 0)
    assert priv.shape == (cfg.num_tokens,) and priv.sum() == load_masks(b.train[0].masks)[0][:cfg.clip_span].sum()


def test_the_smallest_benchmark_allowed_is_made_and_a_smaller_one_refused(tmp_path):
    """--size 16 and --frames 2, the least the options allow, render (16 px once failed in the
    background clutter, 1 frame in the people's speeds: tracebacks); less is a usage error."""
    from ppar_cli.research.synth import generate

    generate(tmp_path / "b", 12, seed=1, size=16, frames=2, workers=1)
    assert len(list((tmp_path / "b").glob("*/*.masks.npz"))) == 12
    for kw, said in (({"size": 15}, "size must lie in 16..1024"), ({"frames": 1}, "frames must lie in 2.."),
                     ({"size": 100_000}, "size must lie in 16..1024, got 100000"), ({"fps": 1e9}, r"fps must lie in \(0, 1000\]"),
                     ({"workers": 0}, "workers must be a whole number of at least 1")):
        with pytest.raises(UsageError, match=said):
            generate(tmp_path / "c", 2, seed=1, **{"size": 16, "frames": 2, **kw})
