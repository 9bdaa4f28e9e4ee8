import json
import os
import re
import subprocess
import sys

import pytest
from helpers import ppar


@pytest.mark.slow
def test_cli_anonymize_and_info(tmp_path, odd_clip, tiny_weights):
    r = ppar("anonymize", odd_clip, tmp_path / "o.mp4", "--weights", tiny_weights, "--keep", "0.3", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "o.json").read_text())["model"]["keep"] == 0.3
    r = ppar("anonymize", odd_clip, tmp_path / "o.mp4", "--weights", tiny_weights, "--quiet")
    assert r.returncode == 2 and "already exists" in r.stderr
    info = ppar("info", tiny_weights, "--json")
    assert info.returncode == 0
    d = json.loads(info.stdout)
    assert d["config"]["name"] == "test-tiny" and len(d["sha256"]) == 64 and d["parameters"] > 0


@pytest.mark.slow
def test_score_map_on_stdout(tmp_path, odd_clip, tiny_weights):
    """`--scores -` wrote a file named "-"; it now prints the score map for a pipe, nothing else on stdout."""
    spool = tmp_path / "tmp"
    spool.mkdir()
    r = ppar("anonymize", odd_clip, tmp_path / "o.mp4", "--weights", tiny_weights, "--scores", "-", cwd=tmp_path,
             env={**os.environ, "TMPDIR": str(spool)})
    lines = r.stderr.splitlines()  # notes, then the result: each one line, not wrapped at 80 columns
    assert r.returncode == 0 and lines[-1].startswith("ok ") and all(x.startswith(("note ", "ok ")) for x in lines), r.stderr
    assert json.loads(r.stdout)["schema"] == "ppar-scores/1" and (tmp_path / "o.mp4").exists()
    assert not (tmp_path / "-").exists() and not (tmp_path / "o.json").exists() and not list(spool.glob("ppar-*"))
    r = ppar("anonymize", odd_clip, tmp_path / "p.mp4", "--weights", tiny_weights, "--scores", "-", "--no-scores")
    assert r.returncode == 2 and r.stderr == ("error: --scores names a score map, but score maps are off (--no-scores): "
                                              "give one or the other\n") and r.stdout == ""


def test_native_stderr_goes_to_the_log_and_pythons_stays_on_the_terminal(tmp_path):
    """mediapipe's C++ logging wrote four lines a video among `ppar pseudolabel`'s progress."""
    code = ("import os, sys\nfrom pathlib import Path\nfrom ppar_cli.views import native_stderr_to\n"
            f"with native_stderr_to(Path({str(tmp_path / 'n.log')!r})):\n"
            "    os.write(2, b'native\\n')\n    print('python', file=sys.stderr)\n"
            "print('after', file=sys.stderr)\nos.write(2, b'native again\\n')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "python\nafter\nnative again\n", r.stderr
    assert (tmp_path / "n.log").read_text() == "native\n"


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path, odd_clip, tiny_weights):
    for args, code in ((["--keep", "1.5"], 2), (["--keep", "abc"], 2), (["--batch-size", "0"], 2), (["--device", "tpu"], 2)):
        r = ppar("anonymize", odd_clip, tmp_path / "x.mp4", "--weights", tiny_weights, "--quiet", *args)
        assert r.returncode == code, (args, r.stderr)
        assert "Traceback" not in r.stderr
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    r = ppar("anonymize", odd_clip, tmp_path / "x.mp4", "--weights", bad, "--quiet")
    assert r.returncode == 2 and "bad.safetensors" in r.stderr and "Traceback" not in r.stderr
    text = tmp_path / "t.mp4"
    text.write_text("hello")
    r = ppar("anonymize", text, tmp_path / "y.mp4", "--weights", tiny_weights, "--quiet")
    assert r.returncode == 1 and "t.mp4" in r.stderr and not (tmp_path / "y.mp4").exists()


@pytest.mark.slow
def test_research_commands_name_a_missing_input(tmp_path):
    missing = tmp_path / "nowhere"
    for args in (["eval", "--data", missing], ["train", "--data", missing, "--out", tmp_path / "w.safetensors",
                                              "--run-dir", tmp_path / "run"],
                 ["pseudolabel", missing, tmp_path / "masks"]):
        r = ppar(*args)
        assert r.returncode == 2, (args, r.stderr)
        # exactly one line: no blank line after it from a progress display stopped in a pipe
        assert r.stderr == f"error: {missing}: no such file or directory\n", args
    assert sorted(tmp_path.iterdir()) == []  # no run or masks folder made


@pytest.mark.slow
def test_cli_audit_table_json_and_errors(tmp_path, odd_clip, tiny_weights):
    pytest.importorskip("onnxruntime", reason="the audit needs the guard extra (onnxruntime)")
    out = tmp_path / "o.mp4"
    assert ppar("anonymize", odd_clip, out, "--weights", tiny_weights, "--quiet", "--hysteresis", "1",
                "--guard-stride", "1").returncode == 0  # the guard searches every frame the audit checks
    r = ppar("audit", odd_clip, out, "--detectors", "centerface", "--identity", "off")
    assert r.returncode == 0, r.stderr
    assert "centerface" in r.stdout and "odd.mp4" in r.stdout
    r = ppar("audit", odd_clip, out, "--detectors", "centerface", "--identity", "off", "--json")
    [rec] = json.loads(r.stdout)
    cf = rec["detectors"]["centerface"]  # at 0.1 CenterFace fires on a few frames of the test pattern
    assert rec["frames"] == 50 and "identity" not in rec
    assert cf["face_frames_before"] > 0 and cf["leaked_frames"] == 0  # the guard hid every one of them
    r = ppar("audit", odd_clip, odd_clip, "--detectors", "centerface", "--identity", "off", "--json")
    same = json.loads(r.stdout)[0]["detectors"]["centerface"]  # the original against itself: every face leaks
    assert same["leaked_frames"] == same["face_frames_before"] == cf["face_frames_before"]
    assert same["confident_leaked_frames"] == 0  # a test pattern: low-score boxes, no face CenterFace is sure of
    for args in (["--identity", "maybe"], ["--detectors", "haar"], ["--threshold", "1"]):  # 1: no face found, all passes
        r = ppar("audit", odd_clip, out, *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr and args[1] in r.stderr, (args, r.stderr)
    r = ppar("audit", odd_clip, tmp_path / "missing.mp4")
    assert r.returncode == 2 and "missing.mp4" in r.stderr


def test_cli_audit_folder_reports_missing_and_mismatched_outputs(tmp_path):
    pytest.importorskip("onnxruntime", reason="the audit needs the guard extra (onnxruntime)")
    from helpers import make_clip

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    make_clip(src / "a.mp4", 64, 48, 20, audio=False)
    make_clip(src / "b.mp4", 64, 48, 20, audio=False)
    make_clip(out / "a.mp4", 64, 48, 12, audio=False)  # fewer frames than its original
    r = ppar("audit", src, out, "--detectors", "centerface", "--identity", "off", "--json")
    assert r.returncode == 1
    errors = {rec["original"].rsplit("/", 1)[-1]: rec["error"] for rec in json.loads(r.stdout)}
    assert "12 frames" in errors["a.mp4"] and "20" in errors["a.mp4"]
    assert "no anonymized output" in errors["b.mp4"]


@pytest.mark.parametrize("argv,code,out,err", [(["--version"], 0, "ppar ", ""),
                                               (["anonymize", "bad.mp4", "o.mp4"], 1, "", "bad.mp4: no video stream"),
                                               (["anonymize", "bad.mp4", "o.mp4", "--keep", "7"], 2, "", "--keep must be")])
def test_program_ends_at_once_with_its_exit_code_and_output(tmp_path, argv, code, out, err):
    """The `ppar` program (cli.run) ends its process once main returns, without the interpreter's
    teardown (no atexit handler runs), with main's exit code and its output flushed into a pipe."""
    import subprocess
    import sys

    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    script = ("import atexit, sys\n"
              "from ppar_cli import cli\n"
              "atexit.register(lambda: print('torn down'))\n"
              f"sys.argv = ['ppar', *{argv!r}]\n"
              "cli.run()\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == code and "torn down" not in r.stdout
    assert out in r.stdout and (r.stdout.strip() != "") == bool(out) and err in r.stderr


def test_exit_codes_are_pythons(capsys):
    from ppar_cli.cli import exit_code

    assert [exit_code(SystemExit(c)) for c in (None, 0, 2)] == [0, 0, 2] and capsys.readouterr().err == ""
    assert exit_code(SystemExit("stopped: why")) == 1 and capsys.readouterr().err == "stopped: why\n"


def test_version(monkeypatch, capsys):
    import sys

    import ppar_cli.cli as cli
    from ppar_cli import __version__

    monkeypatch.setattr(sys, "argv", ["ppar", "--version"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 0 and capsys.readouterr().out == f"ppar {__version__}\n"


@pytest.mark.slow
def test_cli_shows_names_and_messages_as_they_are(tmp_path):
    """File names and messages are text, not rich markup: "[final]" or "[red]" stay as they are."""
    import random

    from helpers import make_clip

    src = tmp_path / "in"
    src.mkdir()
    good = make_clip(src / "clip [final].mp4", 96, 64, 40)
    data = good.read_bytes()
    mid = len(data) // 2
    (src / "cut [red]x.mp4").write_bytes(data[:mid] + bytes(random.Random(0).randrange(256) for _ in range(4096)) + data[mid + 4096:])
    (src / "text [b].mp4").write_text("not a video")
    r = ppar("anonymize", src, tmp_path / "out", "--guard", "none", "--device", "cpu", "--jobs", "2",
             env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 1, r.stderr
    for shown in ("clip [final].mp4", "cut [red]x.mp4: damaged input", "text [b].mp4: no video stream"):
        assert shown in r.stderr, (shown, r.stderr)
    # the counts, the time and the layout (on the CPU one process by default)
    assert re.search(r"^2 ok, 0 skipped, 1 failed in [0-9.]+ s, 2 videos at once in one process$", r.stderr, re.M), r.stderr
    r = ppar("anonymize", src / "nope [x].mp4", tmp_path / "o.mp4")
    assert r.returncode != 0 and "nope [x].mp4: no such file" in r.stderr, r.stderr


@pytest.mark.slow
def test_names_that_are_not_utf8_are_shown_and_recorded(tmp_path):
    """Old archives and camera cards carry Latin-1 names, which reach Python as lone surrogates: such
    a file is anonymized like any other, shown with its byte as \\xe9 (a crash in the manifest
    stopped the batch), and recorded as JSON that reads back as its name, so a rerun skips it."""
    from helpers import make_clip

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    good, bad = os.fsdecode(b"caf\xe9.mp4"), os.fsdecode(b"bad\xff.mp4")
    make_clip(src / good, 96, 64, 10)
    (src / bad).write_bytes(b"")
    r = ppar("anonymize", src, out, "--guard", "none", env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "caf\\xe9.mp4" in r.stderr and "bad\\xff.mp4: empty file" in r.stderr, r.stderr
    table = [x for x in r.stderr.splitlines() if x and x[0] in "┏│└"]
    assert len({len(x) for x in table}) == 1, table  # the table measured the name as shown
    lines = [json.loads(x) for x in (out / "ppar-manifest.jsonl").read_text().splitlines()]
    assert {os.path.basename(x["src"]): x["status"] for x in lines} == {good: "ok", bad: "failed"}
    assert os.path.exists(lines[[x["status"] for x in lines].index("ok")]["dst"])
    r = ppar("anonymize", src, out, "--guard", "none")
    assert r.returncode == 1 and "1 skipped" in r.stderr, r.stderr


def test_names_that_a_terminal_would_act_on_are_shown_escaped(tmp_path):
    """A file name may hold ESC (here the sequence that clears the screen) or a newline: printed raw,
    it would act on the terminal or read as two lines. Each is shown as its escape, on one line."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("clear\x1b[2Jx.mp4", "new\nline.mp4", "bidi\u202egpj.mp4"):
        (src / name).write_bytes(b"")
    r = ppar("anonymize", src, tmp_path / "out", env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 1 and "\x1b" not in r.stderr and "\u202e" not in r.stderr and "new\nline" not in r.stderr
    for shown in ("clear\\x1b[2Jx.mp4: empty file", "new\\nline.mp4: empty file", "bidi\\u202egpj.mp4: empty file"):
        assert shown in r.stderr, r.stderr


@pytest.mark.slow
def test_decoder_complaints_stay_off_the_terminal(tmp_path):
    """FFmpeg's log stays off (reading it through PyAV deadlocked: decode.FrameReader._av_chunks):
    the decoder's complaints about a damaged file reach the user only as the result's note."""
    import random

    from helpers import make_clip

    data = make_clip(tmp_path / "c.mp4", 96, 64, 40).read_bytes()
    mid = len(data) // 2
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(data[:mid] + bytes(random.Random(0).randrange(256) for _ in range(4096)) + data[mid + 4096:])
    r = ppar("anonymize", bad, tmp_path / "o.mp4", "--guard", "none", "-q")
    assert r.returncode == 0 and r.stderr == "", r.stderr
