"""The contract every dataset source keeps (`lbdt.data.sources.SOURCES`): its facts are class attributes of
the right kinds, the engine reads them (not dataset names), `mask_path(record)` names the file that holds a
record's mask, and a mask of the wrong size is one `LBDTError` line naming that file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lbdt.config import DataConfig
from lbdt.data.sources import SOURCES
from lbdt.data.synth import FORMATS
from lbdt.engine.datasets import build_dataset, build_source
from lbdt.engine.inference import PROTOCOLS
from lbdt.errors import LBDTError
from lbdt.words import WordVectors

SCORING = ("refer", "davis", "mevis", "longrvos")  # what lbdt.engine.evaluate knows how to score
NAMES = sorted(SOURCES)


def _split_with_masks(source) -> str:
    for split in ("train", "val", "valid_u", "test"):
        try:
            if source.has_masks(split) and source.records(split):
                return split
        except LBDTError:
            continue
    raise AssertionError(f"{source}: no split with masks")


def _dataset(root, name, split):
    cfg = DataConfig(dataset=name, root=str(root), size=(64, 96), val_split="")
    return build_dataset(cfg, split, train=False, word_vectors=WordVectors(["a"], np.zeros((1, 300), np.float32)))


@pytest.mark.parametrize("name", NAMES)
def test_facts_are_class_attributes_of_the_right_kind(name):
    cls = SOURCES[name]
    assert cls.name == name
    for fact in ("default_frame_gap", "raw_frame_gap"):
        value = getattr(cls, fact)
        assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, (fact, value)
    assert isinstance(cls.numbered_frames, bool) and isinstance(cls.jf_by_default, bool)
    assert cls.default_protocol in PROTOCOLS
    assert cls.scoring in SCORING
    top = cls.submission_top
    assert top is None or top == "" or (isinstance(top, str) and top.endswith("/") and "/" not in top[:-1])
    assert name in FORMATS, f"`lbdt synth --format {name}` must write a synthetic {name} benchmark"


@pytest.mark.parametrize("name", NAMES)
def test_mask_path_names_an_existing_file_for_every_record(synth_roots, name):
    source = build_source(name, synth_roots[name])
    split = _split_with_masks(source)
    records = source.records(split)
    assert records
    for r in records:
        path = source.mask_path(r)
        # Long-RVOS has no file where the object is absent (an empty target); its object's folder exists
        assert path.is_file() or (name == "longrvos" and path.parent.is_dir()), path
        assert source.read_mask(r).dtype == bool


@pytest.mark.parametrize("name", NAMES)
def test_a_mask_of_the_wrong_size_is_one_line_naming_its_file(synth_roots, name, monkeypatch):
    source_cls = SOURCES[name]
    real = source_cls.read_mask
    monkeypatch.setattr(source_cls, "read_mask", lambda self, r: np.zeros((3, 5), bool) if real(self, r) is not None
                        else None)
    source = build_source(name, synth_roots[name])
    split = _split_with_masks(source)
    data = _dataset(synth_roots[name], name, split)
    with pytest.raises(LBDTError) as e:
        data[0]
    message = str(e.value)
    assert "\n" not in message and str(source.mask_path(data.records[0])) in message and "(3, 5)" in message


def test_a_davis_annotation_of_the_wrong_size_names_the_png(copy_benchmark):
    root = copy_benchmark("davis")
    source = build_source("davis", root)
    r = source.records("train")[0]
    png = source.mask_path(r)
    with Image.open(png) as im:
        im.resize((im.width // 2, im.height // 2), Image.NEAREST).save(png)
    with pytest.raises(LBDTError) as e:
        _dataset(root, "davis", "train")[0]
    assert "\n" not in str(e.value) and str(png) in str(e.value) and "mask size" in str(e.value)


def test_a_mevis_mask_of_the_wrong_size_names_mask_dict(copy_benchmark):
    from pycocotools import mask as mask_utils

    root = copy_benchmark("mevis")
    source = build_source("mevis", root)
    r = source.records("train")[0]
    path = source.mask_path(r)
    assert path.name == "mask_dict.json"
    masks = json.loads(path.read_text())
    small = mask_utils.encode(np.asfortranarray(np.ones((4, 6), np.uint8)))
    small["counts"] = small["counts"].decode()
    masks = {anno: [small if rle is not None else None for rle in per_frame] for anno, per_frame in masks.items()}
    path.write_text(json.dumps(masks))
    with pytest.raises(LBDTError) as e:
        _dataset(root, "mevis", "train")[0]
    assert "\n" not in str(e.value) and str(path) in str(e.value) and "(4, 6)" in str(e.value)
