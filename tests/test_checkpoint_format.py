"""lbdt.checkpoint: one writer and reader of our format — atomic writes, schema validation, Runnable facts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from lbdt.checkpoint import (
    Runnable,
    make_state,
    read_checkpoint,
    run_facts,
    runnable_from_state,
    save_checkpoint,
    validate_state,
)
from lbdt.errors import LBDTError
from lbdt.models.build import build_model
from lbdt.words import WordVectors

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _state(v: float) -> dict:
    return {"format": "lbdt", "version": 1, "variant": "tiny", "model_config": {}, "model": {"w": torch.full((4,), v)}}


def test_exception_during_save_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(_state(1.0), path)

    def broken_save(obj, f):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(_state(2.0), path)
    monkeypatch.undo()
    assert torch.equal(read_checkpoint(path)["model"]["w"], torch.full((4,), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # temp file removed


def test_sigkill_during_save_keeps_previous(tmp_path):
    """A process killed (SIGKILL) after writing the temp file, before the rename, leaves the old file."""
    path = tmp_path / "last.pt"
    script = textwrap.dedent(f"""
        import os, signal, torch
        import lbdt.io
        from lbdt.checkpoint import save_checkpoint
        def state(v):
            return {{"format": "lbdt", "version": 1, "variant": "tiny", "model_config": {{}},
                     "model": {{"w": torch.full((1000,), v)}}}}
        save_checkpoint(state(1.0), {str(path)!r})
        def die(src, dst):
            assert os.path.getsize(src) > 4000  # the new checkpoint is fully in the temp file
            os.kill(os.getpid(), signal.SIGKILL)
        lbdt.io.os.replace = die
        save_checkpoint(state(2.0), {str(path)!r})
    """)
    proc = subprocess.run(check=False, args=[sys.executable, "-c", script], env=ENV, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (tmp_path / ".last.pt.tmp").is_file()  # the interrupted write
    assert torch.equal(read_checkpoint(path)["model"]["w"], torch.ones(1000))
    save_checkpoint(_state(3.0), path)  # the next save simply overwrites the stale temp file
    assert read_checkpoint(path)["model"]["w"][0] == 3.0 and not (tmp_path / ".last.pt.tmp").exists()


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(LBDTError, match="missing.pt: no such checkpoint file"):
        read_checkpoint(tmp_path / "missing.pt")
    torn = tmp_path / "torn.pt"
    torn.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(LBDTError, match="torn.pt: not a readable weights-only checkpoint"):
        read_checkpoint(torn)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(1)}, other)
    with pytest.raises(LBDTError, match="other.pt: not an lbdt checkpoint"):
        read_checkpoint(other)
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(LBDTError, match="list.pt: not an lbdt checkpoint \\(a list"):
        read_checkpoint(listed)


@pytest.mark.parametrize("field, value, message", [
    ("version", "1", "field 'version' must be int, got str"),
    ("version", True, "field 'version' must be int, got bool"),
    ("version", 7, "checkpoint version 7 is not readable"),
    ("variant", 3, "field 'variant' must be str"),
    ("config", [1, 2], "field 'config' must be dict, got list"),
    ("model", {"w": [1.0]}, "field 'model' must map parameter names to tensors"),
    ("card", "nice", "field 'card' must be dict"),
    ("word_vectors", {"words": ["a"], "vectors": torch.zeros(2, 3)}, "'word_vectors.vectors' must be a \\[1, D\\]"),
    ("word_vectors", {"words": "ab", "vectors": torch.zeros(2, 3)}, "'word_vectors.words' must be a list"),
    ("epoch", 1, "no 'optimizer' field"),  # one training field requires all of them
])
def test_schema_errors_name_file_and_field(tmp_path, field, value, message):
    state = _state(1.0)
    state[field] = value
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(LBDTError, match=f"bad.pt: .*{message}"):
        read_checkpoint(path)
    with pytest.raises(LBDTError, match=message):  # and it is never written
        save_checkpoint(state, tmp_path / "never.pt")
    assert not (tmp_path / "never.pt").exists()


def test_config_data_must_be_a_dict(tmp_path):
    state = {**_state(1.0), "config": {"data": [1]}}
    with pytest.raises(LBDTError, match="'config.data' must be a dict"):
        validate_state(state, "x.pt")


def test_resume_needs_training_state():
    with pytest.raises(LBDTError, match="inference-only checkpoint .* cannot be resumed"):
        validate_state(_state(1.0), "shipped.pt", training=True)


def test_round_trip_to_a_runnable_with_its_facts(tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    table = WordVectors(["a", "red"], torch.randn(2, 300).numpy())
    config = {"data": {"dataset": "ytvos", "size": [64, 96], "max_words": 12}}
    path = tmp_path / "w.pt"
    save_checkpoint(make_state(model, variant="tiny", config=config, source="test", card={"license": "MIT"},
                               word_vectors=table), path)
    r = runnable_from_state(read_checkpoint(path), where=str(path), source="mine")
    assert isinstance(r, Runnable) and not hasattr(r.model, "checkpoint_info")
    assert (r.variant, r.dataset, r.size, r.frame_gap, r.max_words) == ("tiny", "ytvos", (64, 96), 5, 12)
    assert r.card == {"license": "MIT"} and r.word_vectors.words == ["a", "red"]
    for k, v in model.state_dict().items():
        assert torch.equal(r.model.state_dict()[k], v)
    assert r.describe()["word_table"] == "embedded"


def test_run_facts_defaults_and_errors():
    assert run_facts({}, "x") == {"dataset": "", "size": (320, 320), "frame_gap": 6, "max_words": 25}
    assert run_facts({"dataset": "a2d", "frame_gap": 2}, "x")["frame_gap"] == 2
    with pytest.raises(LBDTError, match="x: config.data has an invalid size"):
        run_facts({"size": [0, 32]}, "x")
    with pytest.raises(LBDTError, match="x: config.data has a malformed"):
        run_facts({"max_words": "many"}, "x")


def test_old_checkpoints_name_their_synthetic_table(tmp_path):
    """Checkpoints written before `word_table` existed said `config.data.synthetic_seed`."""
    model = build_model("tiny")
    state = make_state(model, variant="tiny", config={"data": {"synthetic_seed": 4, "word_vectors": "w.txt"}})
    r = runnable_from_state(state, where="old.pt", source="old.pt")
    from lbdt.data.synth import vocabulary

    assert r.word_table == "" and r.word_vectors.words == WordVectors.seeded(vocabulary(), dim=300, seed=4).words
