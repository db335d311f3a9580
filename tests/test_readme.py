"""Every ```python and ```bash block of README.md runs as written, in a scratch folder holding a small clip
(clip.mp4) and what `lbdt demo` writes (out/demo/, whose clip.mp4 the Python blocks use).

Downloads are replaced by small stand-ins installed beforehand into `$LBDT_HOME` through the real
`lbdt download --from` code (a tiny lbdt checkpoint standing in for official-lbdt4, an 8-word GloVe zip for
glove-840b), so `lbdt download NAME` finds them installed and fetches nothing. A block that cannot run here is
preceded in README.md by `<!-- readme-test: skip (reason) -->`, which this test reports as a skip with that reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import media
from lbdt import download, registry
from lbdt.demo import run_demo
from test_download import glove_text, glove_zip
from test_pretrained import tiny_state

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:<!-- readme-test: skip \((?P<skip>[^)]*)\) -->\n)?```(?P<lang>python|bash)\n(?P<code>.*?)```",
                   re.DOTALL)
BLOCKS = [(m.group("lang"), m.group("code"), m.group("skip")) for m in BLOCK.finditer((ROOT / "README.md").read_text())]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """(working folder with clip.mp4, environment with `lbdt` on PATH and LBDT_HOME holding the stand-ins)."""
    base = tmp_path_factory.mktemp("readme")
    work, home, bin_dir = base / "work", base / "lbdt_home", base / "bin"
    for d in (work, bin_dir):
        d.mkdir()
    shim = bin_dir / "lbdt"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m lbdt.cli "$@"\n')
    shim.chmod(0o755)
    frames = [np.full((48, 64, 3), 40, np.uint8) for _ in range(4)]
    for t, f in enumerate(frames):
        f[10:22, 8 + 6 * t:20 + 6 * t] = (220, 30, 30)  # a red square moving right
    media.write_mp4(work / "clip.mp4", frames)
    run_demo(out_dir=work / "out" / "demo", precision="fp32")  # out/demo/clip.mp4, as `make demo` leaves it
    _, state = tiny_state(size=(64, 96), frame_gap=2)
    torch.save(state, base / "tiny.pt")
    known = dict(registry.KNOWN)
    known["official-lbdt4"] = replace(known["official-lbdt4"], kind="lbdt", variant="tiny", min_bytes=0,
                                      settings={"dataset": "a2d", "size": [64, 96], "frame_gap": 2, "max_words": 25})
    old = os.environ.get("LBDT_HOME")
    os.environ["LBDT_HOME"] = str(home)
    try:
        download.install("official-lbdt4", source=base / "tiny.pt", progress=False, known=known)
        # a full install (no --max-words) of an 8-word stand-in, so the README's plain `lbdt download glove-840b`
        # finds it installed with the same options
        known["glove-840b"] = replace(known["glove-840b"], words=len(glove_text()[1]))
        download.install("glove-840b", source=glove_zip(base / "g.zip", glove_text()[0]), progress=False, known=known)
    finally:
        if old is None:
            del os.environ["LBDT_HOME"]
        else:
            os.environ["LBDT_HOME"] = old
    env = {**os.environ, "LBDT_HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return work, env


def test_the_readme_has_runnable_blocks():
    assert sum(skip is None for _, _, skip in BLOCKS) >= 2 and any(lang == "python" for lang, _, _ in BLOCKS)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, scratch):
    lang, code, skip = BLOCKS[index]
    if skip is not None:
        pytest.skip(f"README block {index + 1}: {skip}")
    work, env = scratch
    command = [sys.executable, "-c", code] if lang == "python" else ["bash", "-e", "-o", "pipefail", "-c", code]
    done = subprocess.run(command, check=False, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"README block {index + 1} ({lang}) failed:\n{code}\n{done.stdout}\n{done.stderr}"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_installs_lbdt_alone_and_make_test_the_dev_extras(tmp_path):
    """`make demo` into a fresh venv installs `.` without the developer extras; `make test` installs `.[dev]`."""
    def plan(target: str) -> list[str]:
        done = subprocess.run(["make", "-n", "-C", str(ROOT), target, f"VENV={tmp_path / 'venv'}"], check=True,
                              capture_output=True, text=True)
        return [line for line in done.stdout.splitlines() if "pip install" in line and "--upgrade pip" not in line]

    (demo,) = plan("demo")
    assert demo.endswith(" -e .") and "[dev]" not in demo
    (test,) = plan("test")
    assert test.endswith(" -e '.[dev]'")
