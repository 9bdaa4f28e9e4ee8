import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ppar_cli.core.config import PPARConfig
from ppar_cli.core.weights import load_weights
from ppar_cli.research.evaluate import tubelet_pixels
from ppar_cli.research.report import pareto_front, sweet_spots
from ppar_cli.research.metrics import average_precision, oracle_keep, privacy_metrics


def test_average_precision_hand_computed():
    # ranking: pos, neg, pos -> precisions at hits 1/1 and 2/3 -> AP = (1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1])) == pytest.approx((1 + 2 / 3) / 2)
    m = privacy_metrics(np.array([[0.9, 0.2], [0.1, 0.6]]), np.array([[1, 0], [0, 1]]), ["a", "b"])
    assert m["privacy_cmap"] == 1.0 and m["privacy_f1"] == 1.0


def test_oracle_drops_privacy_first_then_least_action():
    priv = np.array([0, 5, 0, 0, 2])
    act = np.array([1, 9, 7, 0, 3])
    assert oracle_keep(priv, act, 2).tolist() == [True, False, True, False, False]
    assert oracle_keep(priv, act, 4).tolist() == [True, False, True, True, False]  # never a privacy tubelet


def test_tubelet_pixels_layout():
    cfg = PPARConfig(frames=4, image_size=16, tubelet=(2, 8, 8), dim=32, depth=1, heads=2, prune_blocks=(1,), stem="linear")
    keep = np.zeros((1, cfg.num_tokens), bool)
    keep[0, 1 * 4 + 0 * 2 + 1] = True  # slab 1, row 0, column 1
    px = tubelet_pixels(keep, cfg)[0, ..., 0]
    assert px.shape == (4, 16, 16) and px.sum() == 2 * 8 * 8
    assert px[2:, :8, 8:].all()


def test_pareto_and_sweet_spots():
    recs = [{"method": "raw", "keep": None, "action_top1": 0.95, "privacy_cmap": 0.9},
            {"method": "ppar", "keep": 0.7, "action_top1": 0.94, "privacy_cmap": 0.6},
            {"method": "ppar", "keep": 0.5, "action_top1": 0.85, "privacy_cmap": 0.4},
            {"method": "random", "keep": 0.5, "action_top1": 0.80, "privacy_cmap": 0.7},  # dominated
            {"method": "ppar", "keep": 0.3, "action_top1": 0.5, "privacy_cmap": 0.35}]
    front = pareto_front(recs)
    assert [(r["method"], r["keep"]) for r in front] == [("ppar", 0.3), ("ppar", 0.5), ("ppar", 0.7), ("raw", None)]
    spots = sweet_spots(recs)
    assert spots["lowest_leakage_near_raw_utility"]["keep"] == 0.7
    assert spots["knee"]["keep"] == 0.5


@pytest.mark.slow
def test_eval_cli_writes_outputs(tmp_path, tiny_weights):
    from ppar_cli.research.synth import generate

    generate(tmp_path / "b", 20, seed=21, size=48, frames=20, workers=1)
    out = tmp_path / "res"
    r = subprocess.run([sys.executable, "-m", "ppar_cli.cli", "eval", "--data", str(tmp_path / "b"), "--weights", str(tiny_weights),
                        "--keep", "0.3:0.7:0.2", "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    recs = {(x["method"], x["keep"]) for x in res["records"]}
    assert ("ppar", 0.5) in recs and ("oracle", 0.3) in recs and ("raw", None) in recs and ("downsample4", None) in recs
    assert ("blacken", None) in recs
    oracle = next(x for x in res["records"] if x["method"] == "oracle" and x["keep"] == 0.5)
    assert oracle["privacy_pixels_removed"] == 1.0 or oracle["privacy_pixels_removed"] > 0.99
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == len(res["records"])
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    full = tmp_path / "full"
    r = subprocess.run([sys.executable, "-m", "ppar_cli.cli", "eval", "--data", str(tmp_path / "b"), "--weights", str(tiny_weights),
                        "--protocol", "full", "--epochs", "1", "--keep", "0.5", "--methods", "raw,ppar,blacken",
                        "--seeds", "0,1", "--device", "cpu", "--out", str(full), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    recs = {x["method"]: x for x in json.loads((full / "results.json").read_text())["records"]}
    assert set(recs) == {"raw", "ppar", "blacken"}
    for x in recs.values():
        assert x["protocol"] == "full" and 0 <= x["action_top1"] <= 1 and 0 <= x["privacy_cmap"] <= 1 and 0 <= x["reid_top1"] <= 1
        assert x["seeds"] == 2 and "action_top1_std" in x and "privacy_cmap_std" in x
    assert any(p.name.startswith("ppar@0.5_") for p in (full / "cache").iterdir())  # anonymized training clips cached
    again = [sys.executable, "-m", "ppar_cli.cli", "eval", "--data", str(tmp_path / "b"), "--weights", str(tiny_weights),
             "--protocol", "full", "--epochs", "1", "--keep", "0.5", "--methods", "ppar", "--train-windows", "1",
             "--out", str(full), "--quiet"]
    before = {p.name: p.read_bytes() for p in full.iterdir() if p.is_file()}
    r = subprocess.run(again, capture_output=True, text=True)  # the earlier results are kept unless told
    assert r.returncode == 2 and "holds an earlier evaluation's results.json" in r.stderr, r.stderr
    assert {p.name: p.read_bytes() for p in full.iterdir() if p.is_file()} == before
    r = subprocess.run(again + ["--overwrite"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert {p.name for p in full.iterdir() if p.is_file()} == set(before) and (full / "results.json").read_bytes() != before["results.json"]
    cached = [np.load(p, mmap_mode="r").shape[0] for p in (full / "cache").iterdir() if p.name.startswith("ppar@0.5_")]
    assert len(cached) == 2 and max(cached) == 4 * min(cached)  # 1 window per video: a cache entry of its own
    bad = subprocess.run([sys.executable, "-m", "ppar_cli.cli", "eval", "--data", str(tmp_path / "b"), "--weights", str(tiny_weights),
                          "--keep", "2", "--quiet"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--keep" in bad.stderr


def test_an_out_that_is_a_file_or_holds_results_is_refused_before_the_evaluation(tmp_path, tiny_weights):
    from ppar_cli.errors import UsageError
    from ppar_cli.research.evaluate import evaluate_benchmark

    (tmp_path / "results").write_text("mine")
    with pytest.raises(UsageError, match="results: a file, not a folder for the results"):
        evaluate_benchmark(tmp_path / "nowhere", tiny_weights, out=tmp_path / "results")
    assert (tmp_path / "results").read_text() == "mine"
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "results.csv").write_text("mine")  # an earlier evaluation's: refused before the data is read
    with pytest.raises(UsageError, match="earlier: holds an earlier evaluation's results.csv; overwrite replaces them"):
        evaluate_benchmark(tmp_path / "nowhere", tiny_weights, out=tmp_path / "earlier")
    assert (tmp_path / "earlier" / "results.csv").read_text() == "mine"


def test_eval_table_shows_whole_methods_and_header_words_in_80_columns(monkeypatch, capsys):
    from types import SimpleNamespace

    from ppar_cli.views import eval_table

    monkeypatch.setenv("COLUMNS", "80")
    metrics = dict(action_top1=0.5, privacy_cmap=0.8, privacy_f1=0.3, reid_top1=0.1, privacy_pixels_removed=1.0,
                   action_pixels_kept=0.5, motion_over_area=0.9)
    records = [dict(method=m, keep=k, **metrics) for m in ("ppar", "random", "oracle") for k in (0.3, 0.5)]
    records += [dict(method=m, keep=None, **metrics) for m in ("raw", "downsample2", "blacken")]
    eval_table(SimpleNamespace(records=records, spots={}, test_videos=3), "quick")
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 80 and "…" not in out
    for word in ("ppar@0.3", "ppar@0.5", "random@0.3", "downsample2", "privacy", "removed", "motion"):
        assert word in out, word


@pytest.mark.slow
def test_eval_on_ucf101_layout_with_vp_labels(tmp_path, tiny_weights):
    """Both protocols on a tiny UCF101 fixture: generated videos under real file names, a VP-style label pickle."""
    import pickle

    import numpy as np
    from helpers import make_clip

    root = tmp_path / "UCF-101"
    names = {"train": ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01", "YoYo/v_YoYo_g09_c02", "YoYo/v_YoYo_g10_c01"],
             "test": ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01", "YoYo/v_YoYo_g02_c01"]}
    for i, n in enumerate(names["train"] + names["test"]):
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        make_clip(root / f"{n}.avi", 80 + 8 * i, 60, 36, audio=False, extra=["-c:v", "mpeg4"])
    (root / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 YoYo\n")
    (root / "trainlist01.txt").write_text("".join(f"{n}.avi {1 + n.startswith('YoYo')}\n" for n in names["train"]))
    (root / "testlist01.txt").write_text("".join(f"{n}.avi\n" for n in names["test"]))
    rng = np.random.default_rng(0)
    labels = {f"{n}.mp4": rng.integers(0, 2, (1, 5)) for n in names["train"] + names["test"]}
    (tmp_path / "vp.pickle").write_bytes(pickle.dumps(labels))
    for protocol in ("quick", "full"):
        out = tmp_path / protocol
        r = subprocess.run([sys.executable, "-m", "ppar_cli.cli", "eval", "--data", str(root), "--labels", str(tmp_path / "vp.pickle"),
                            "--weights", str(tiny_weights), "--protocol", protocol, "--epochs", "1", "--keep", "0.5",
                            "--out", str(out), "--quiet"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        recs = {x["method"]: x for x in json.loads((out / "results.json").read_text())["records"]}
        assert {"ppar", "random", "raw", "blur"} <= set(recs) and "oracle" not in recs and "blacken" not in recs
        assert all("privacy_cmap" in x and "reid_top1" not in x for x in recs.values())


def test_an_evaluation_that_would_not_fit_in_memory_is_refused_before_decoding(tmp_path, tiny_weights, monkeypatch):
    """The protocols hold their windows twice (raw and anonymized); UCF101 by the full protocol at
    224 px would need about 200 GB (41,931 windows of 16 frames). Where they do not fit, one error
    says how much and what to lower, before a video is decoded (hours on such a benchmark),
    instead of the kernel's OOM kill."""
    import ppar_cli.research.evaluate as ev
    from ppar_cli.errors import UsageError
    from ppar_cli.research.synth import generate

    generate(tmp_path / "b", 20, seed=2, size=48, frames=16, workers=1)  # 18 training and 2 test videos
    monkeypatch.setattr(ev, "ClipSet", lambda *a, **k: pytest.fail("decoded before refusing"))
    window = 8 * 32 * 32 * 3  # tiny_weights: 8 frames of 32 x 32
    monkeypatch.setattr(ev, "memory_free", lambda: 2 * 6 * window)  # room for 6 windows, twice
    with pytest.raises(UsageError, match=r"^the full protocol holds up to 74 windows at 32 px twice .* lower max_videos, max_train_videos"):
        ev.evaluate_benchmark(tmp_path / "b", tiny_weights, protocol="full", out=tmp_path / "res")
    with pytest.raises(UsageError, match=r"^the quick protocol holds up to 8 windows .* lower max_videos or clips_per_video"):
        ev.evaluate_benchmark(tmp_path / "b", tiny_weights, clips_per_video=4, out=tmp_path / "res")
    monkeypatch.setattr(ev, "ClipSet", lambda *a, **k: pytest.fail("reached"))
    with pytest.raises(pytest.fail.Exception, match="reached"):  # 6 windows fit
        ev.evaluate_benchmark(tmp_path / "b", tiny_weights, clips_per_video=3, out=tmp_path / "res")


def test_eval_hysteresis_between_back_to_back_windows(tmp_path, tiny_weights):
    from ppar_cli.research.data import ClipSet, read_synth
    from ppar_cli.research.evaluate import quick_protocol
    from ppar_cli.research.synth import generate

    generate(tmp_path / "b", 12, seed=3, size=48, frames=32, workers=1)  # two 16-frame windows per video
    model = load_weights(tiny_weights).model
    clips = ClipSet(read_synth(tmp_path / "b").test, model.cfg)
    recs = {h: quick_protocol(model, clips, ["ppar", "random"], (0.5,), clips_per_video=2, hysteresis=h) for h in (0.0, 3.0)}
    free, held = (next(r for r in recs[h] if r["method"] == "ppar") for h in (0.0, 3.0))
    assert held["hysteresis"] == 3.0 and 0 <= held["flicker"] < 0.5 * free["flicker"]
    rand = next(r for r in recs[0.0] if r["method"] == "random")
    assert 0.3 < rand["flicker"] < 0.7  # independent halves of the tubelets: about 0.5


def test_static_baseline_reuses_ppar_masking_pass(tmp_path, tiny_weights, monkeypatch):
    from ppar_cli.research import evaluate
    from ppar_cli.research.data import ClipSet, read_synth
    from ppar_cli.research.metrics import static_keep
    from ppar_cli.research.synth import generate

    generate(tmp_path / "b", 6, seed=4, size=48, frames=16, workers=1)
    model = load_weights(tiny_weights).model
    w = evaluate.Windows.of(ClipSet(read_synth(tmp_path / "b").test, model.cfg), 1)
    calls = []
    real = evaluate.score_batches
    monkeypatch.setattr(evaluate, "score_batches", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    rng = np.random.default_rng(0)
    evaluate.anonymize_windows(model, w, "ppar", 0.5, rng)
    evaluate.anonymize_windows(model, w, "static", 0.5, rng)
    assert calls == [0.5]  # one masking pass for both
    kept = w.scored[(model, 0.5, None)]["keep"]
    anon, _ = evaluate.anonymize_windows(model, w, "static", 0.5, rng)
    static = np.repeat(static_keep(kept, int(kept[0].sum()))[None], len(w.raw), 0)
    assert np.array_equal(anon, w.raw * evaluate.tubelet_pixels(static, model.cfg))


def test_motion_and_static_metrics():
    from ppar_cli.research.metrics import motion_metrics, static_keep, tubelet_motion

    cfg = PPARConfig(frames=4, image_size=16, tubelet=(2, 8, 8), dim=32, depth=1, heads=2, prune_blocks=(1,), stem="linear")
    raw = np.zeros((1, 4, 16, 16, 3), np.uint8)
    raw[0, 1::2, :8, :8] = 200  # only the top-left cell flickers
    motion = tubelet_motion(raw, cfg)
    assert motion.shape == (1, 8) and motion[0, 0] > 0 and motion[0, 4] > 0 and motion[0, [1, 2, 3, 5, 6, 7]].sum() == 0
    keep = np.zeros((1, 8), bool)
    keep[0, [0, 4]] = True  # keep exactly the moving cells: a quarter of the area, all of the motion
    assert motion_metrics(keep, motion) == {"motion_kept": 1.0, "motion_over_area": 4.0}
    kept = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0]], bool)
    assert static_keep(kept, 2).tolist() == [True, True, False, False]


def test_seeds_aggregate_to_mean_and_spread():
    from ppar_cli.research.report import aggregate

    a = [{"method": "ppar", "keep": 0.5, "action_top1": 0.6, "per_attribute_ap": {"face": 0.5}}]
    b = [{"method": "ppar", "keep": 0.5, "action_top1": 0.8, "per_attribute_ap": {"face": 0.7}}]
    [r] = aggregate([a, b])
    assert r["keep"] == 0.5 and r["seeds"] == 2 and abs(r["action_top1"] - 0.7) < 1e-9 and abs(r["action_top1_std"] - 0.1) < 1e-9
    assert abs(r["per_attribute_ap"]["face"] - 0.6) < 1e-9
    assert aggregate([a]) == a


@pytest.mark.slow
def test_paper_table_wiring_on_the_synthetic_benchmark_in_ucf101_layout(tmp_path):
    """scripts/paper_table.py end to end: train, full protocol over 2 seeds, Table 1 layout; the
    synthetic benchmark is written in UCF101's layout with a VP-style label pickle."""
    from ppar_cli.research.synth import generate

    generate(tmp_path / "ucf", 16, seed=21, size=48, frames=12, workers=1)
    cfg = {"frames": 4, "frame_stride": 2, "image_size": 32, "tubelet": [2, 8, 8], "dim": 32, "depth": 2, "heads": 2,
           "prune_blocks": [1, 2]}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    script = Path(__file__).resolve().parents[1] / "scripts" / "paper_table.py"
    r = subprocess.run([sys.executable, str(script), "ucf101", "--data", str(tmp_path / "ucf"), "--labels",
                        str(tmp_path / "ucf" / "privacy_labels.pickle"), "--config", str(tmp_path / "cfg.json"),
                        "--epochs", "1", "--eval-epochs", "1", "--seeds", "0,1", "--device", "cpu", "--out", str(tmp_path / "t1")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "t1" / "table.csv")))
    assert [x["method"] for x in rows] == ["raw", "ppar@0.5", "random@0.5", "blur", "downsample2", "downsample4"]
    assert all(x["privacy_cmap"] and x["seeds"] == "2" for x in rows)
    assert "| ucf101 | action top-1 | privacy cMAP | privacy F1 |" in (tmp_path / "t1" / "table.md").read_text()


@pytest.mark.parametrize("bad,said", [({"max_videos": 0}, "max_videos must be a whole number of at least 1"),
                                      ({"clips_per_video": 0}, "clips_per_video must be"),
                                      ({"protocol": "full", "epochs": 0}, "epochs must be"),
                                      ({"train_windows": 0}, "train_windows must be"),
                                      ({"lambda_priv": -1.0}, "lambda_priv must lie in 0..10000"), ({"lambda_priv": 1e308}, "lambda_priv must lie in"),
                                      ({"hysteresis": float("nan")}, "hysteresis must lie in 0..5")])
def test_counts_and_ppars_settings_are_checked_before_the_evaluation(tmp_path, tiny_weights, bad, said):
    """--max-videos 0 once evaluated every video, --clips-per-video 0 one window, --epochs 0 ended in
    a traceback, and --lambda -1 was taken that `ppar anonymize` refuses: all refused up front."""
    from ppar_cli.errors import UsageError
    from ppar_cli.research.evaluate import evaluate_benchmark

    with pytest.raises(UsageError, match=said):
        evaluate_benchmark(tmp_path / "nowhere", tiny_weights, out=tmp_path / "res", **bad)
    assert not (tmp_path / "res").exists()


def test_quick_protocol_on_labels_the_weights_do_not_name_says_so(tmp_path, tiny_weights):
    """The quick protocol reads the weights' own heads by index: on a benchmark with other actions its
    action top-1 compares unrelated labels, and with other attributes it ended in an IndexError.
    Both are said (in the result and results.json), and no privacy figure is made by wrong names."""
    from helpers import make_clip

    from ppar_cli.research.evaluate import evaluate_benchmark

    for name in ("a", "b"):
        make_clip(tmp_path / f"{name}.mp4", 64, 48, 20, audio=False)
    (tmp_path / "d.csv").write_text("path,action,male,split\na.mp4,kick,1,train\nb.mp4,punch,0,test\n")
    result = evaluate_benchmark(tmp_path / "d.csv", tiny_weights, "csv", methods=("ppar", "raw"), keeps=(0.5,),
                                out=tmp_path / "res")
    assert [n.split(" (")[0] for n in result.notes] == ["tiny.safetensors was trained on other actions",
                                                        "tiny.safetensors's privacy head names other attributes"]
    assert all("privacy_cmap" not in r for r in result.records) and len(result.records) == 2
    assert json.loads((tmp_path / "res" / "results.json").read_text())["notes"] == result.notes


def test_keep_ratios_are_each_given_once_and_a_sweep_is_bounded():
    """0.1:0.9:0.0001 asked for 8,001 evaluations of every method, and 0:1:1e-300 for a list no
    memory holds; a ratio given twice was evaluated twice."""
    from ppar_cli.errors import UsageError
    from ppar_cli.research.evaluate import parse_keeps

    assert parse_keeps("0.5,0.3,0.5") == [0.5, 0.3] and len(parse_keeps("0:1:0.01")) == 101
    for text, said in (("0.1:0.9:0.0001", "is 8,001 keep ratios; give at most 101"), ("0:1:1e-300", "is millions of"),
                       ("0.9:0.1:0.1", "give keep ratios in"), ("0:1:nan", "give keep ratios in")):
        with pytest.raises(UsageError, match=said):
            parse_keeps(text)

