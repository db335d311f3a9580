"""Config: presets, dotted overrides with type conversion, clear errors, YAML / dict round trips."""

import pytest
import yaml

from lbdt.cli import main
from lbdt.config import RunConfig, available_presets, dump_yaml, from_dict, load_config, save_yaml, to_dict
from lbdt.errors import LBDTError


def test_presets_ship_and_differ_only_where_needed():
    assert {"a2d_lbdt4", "a2d_lbdt1", "ytvos_lbdt4", "synthetic_tiny"} <= set(available_presets())
    a2d = load_config("a2d_lbdt4")
    assert a2d.model.variant == "lbdt4" and a2d.data.val_split == "holdout:0.05"
    # the paper's recipe is the default
    assert (a2d.train.lr, a2d.train.weight_decay, a2d.train.epochs) == (1e-4, 5e-4, 15)
    assert a2d.train.milestones == (10, 12, 14) and a2d.train.gamma == 0.5 and a2d.train.seed == 3407
    assert load_config("a2d_lbdt1").model.variant == "lbdt1"
    tiny = load_config("synthetic_tiny")
    assert tiny.model.variant == "tiny" and tiny.data.root == "datasets/synthetic"
    assert load_config("a2d_lbdt4").train.precision == "auto"
    assert all(s % 32 == 0 for s in tiny.data.size)


def test_overrides_convert_by_field_type():
    cfg = load_config("a2d_lbdt4", ["train.lr=5e-5", "train.epochs=3", "data.size=[128,96]",
                                    "train.milestones=1,2", "train.clip_grad_norm=1", "data.augment=true",
                                    "model.imagenet_weights=none", "train.output_dir=/tmp/x y"])
    assert cfg.train.lr == 5e-5 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.data.size == (128, 96) and cfg.train.milestones == (1, 2)
    assert cfg.train.clip_grad_norm == 1.0 and isinstance(cfg.train.clip_grad_norm, float)
    assert cfg.data.augment is True and cfg.model.imagenet_weights is None
    assert cfg.train.output_dir == "/tmp/x y"
    # untouched fields keep the preset's / default values
    assert cfg.data.val_split == "holdout:0.05" and cfg.train.weight_decay == 5e-4


@pytest.mark.parametrize("override, words", [
    ("train.nope=1", "unknown key train.nope"),
    ("trian.lr=1", "unknown config section"),
    ("train.lr=abc", "train.lr"),
    ("train.epochs=2.5", "integer"),
    ("data.size=[64]", "expected 2 values"),
    ("data.size=[100,100]", "multiples of 32"),
    ("train.precision=fp8", "fp32, bf16, fp16"),
    ("data.augment=maybe", "true/false"),
    ("train.device=gpu", "auto, cpu, cuda or cuda:N"),
    ("lr=1", "section.field=value"),
])
def test_bad_overrides_are_clear_errors(override, words):
    with pytest.raises(LBDTError, match=words.replace("[", r"\[")):
        load_config("a2d_lbdt4", [override])


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(LBDTError, match="presets: .*a2d_lbdt4"):
        load_config("no_such_preset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: 1\n  bogus: 2\n")
    with pytest.raises(LBDTError, match=f"{bad}: unknown key train.bogus"):
        load_config(str(bad))


def test_round_trips(tmp_path):
    cfg = load_config("synthetic_tiny", ["train.lr=3e-4", "data.size=[64,96]"])
    assert from_dict(to_dict(cfg)) == cfg
    assert from_dict(yaml.safe_load(dump_yaml(cfg))) == cfg
    save_yaml(cfg, tmp_path / "config.yaml")
    assert load_config(str(tmp_path / "config.yaml")) == cfg
    assert from_dict({}) == RunConfig()


def test_show_config_cli(capsys):
    assert main(["show-config", "a2d_lbdt1", "train.batch_size=4"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["batch_size"] == 4 and printed["model"]["variant"] == "lbdt1"
    assert main(["show-config", "a2d_lbdt1", "train.batch_size=four"]) == 2
    assert "train.batch_size" in capsys.readouterr().err


def test_every_preset_loads_and_dataset_choices_match_the_sources():
    from lbdt.config import _CHOICES, available_presets
    from lbdt.data.sources import SOURCES

    assert set(_CHOICES[("data", "dataset")]) == set(SOURCES)
    for name in available_presets():
        assert load_config(name).data.dataset in SOURCES, name
