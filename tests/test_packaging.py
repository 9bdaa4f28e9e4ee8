"""The package as a user installs it: a wheel outside the source tree carries the bundled weights,
and the CLI answers --help and usage errors without loading PyTorch."""
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_clip

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installed_outside_the_source_tree_anonymizes_with_bundled_weights(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in ("ppar_cli", "weights"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("ppar-*.whl")
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    shutil.rmtree(src)  # nothing of the source tree is left to fall back on
    clip = make_clip(tmp_path / "in.mp4", 96, 64, 16, audio=False)
    # the face guard's detector ships in the wheel too (run when the guard extra is installed)
    guard = "centerface" if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("cv2") else "none"
    code = ("import sys, ppar_cli; from ppar_cli.core.weights import DEFAULT_WEIGHTS, bundled; "
            f"assert ppar_cli.__file__.startswith({str(target)!r}), ppar_cli.__file__; "
            f"assert str(DEFAULT_WEIGHTS).startswith({str(target)!r}), DEFAULT_WEIGHTS; "
            f"assert str(bundled('centerface.onnx')).startswith({str(target)!r}) and bundled('centerface.onnx').is_file(); "
            "from ppar_cli.cli import app; "
            f"app(['anonymize', {str(clip)!r}, {str(tmp_path / 'o.mp4')!r}, '--guard', {guard!r}, '--quiet'])")
    env = dict(os.environ, PYTHONPATH=str(target))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "o.mp4").exists() and (tmp_path / "o.json").exists()


@pytest.mark.parametrize("args", [["--help"], ["anonymize", "--help"], ["anonymize", "in.mp4", "out.mp4", "--keep", "2"],
                                  ["anonymize", "missing.mp4", "o.mp4"], ["anonymze"]])
def test_help_and_usage_errors_do_not_import_torch(tmp_path, args):
    code = ("import sys; from ppar_cli.cli import app\n"
            "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\nsys.exit(code)")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode in (0, 2), r.stderr[-2000:]
    assert "torch was imported" not in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    print(f"{args}: {time.perf_counter() - t0:.2f} s")
