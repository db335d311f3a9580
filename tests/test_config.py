"""Config: presets, dotted overrides with type conversion, clear errors, YAML / dict round trips."""

import pytest
import yaml

from lbdt.cli import main
from lbdt.config import (
    RunConfig,
    TrainConfig,
    available_presets,
    dump_yaml,
    from_dict,
    load_config,
    process_batch,
    save_yaml,
    to_dict,
)
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
    # the presets that reproduce the paper state its global batch (2 GPUs x 8) and fp32 (no AMP in the original)
    for name in ("a2d_lbdt4", "a2d_lbdt1"):
        train = load_config(name).train
        assert (train.global_batch, train.batch_size, train.grad_accum, train.precision) == (16, 8, 1, "fp32")
    assert load_config("ytvos_lbdt4").train.precision == "auto" and RunConfig().train.global_batch is None
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


@pytest.mark.parametrize("world_size, expected", [(1, (8, 2)), (2, (8, 1)), (4, (4, 1)), (8, (2, 1)), (16, (1, 1))])
def test_global_batch_is_kept_under_any_world_size(world_size, expected):
    """a2d presets: 16 samples per optimizer step whatever --nproc_per_node (batch per process x accumulation)."""
    train = load_config("a2d_lbdt4").train
    batch, accum = process_batch(train, world_size)
    assert (batch, accum) == expected and batch * accum * world_size == 16
    assert batch <= train.batch_size


def test_global_batch_derivation_rules():
    # the fewest equal micro-batches that fit batch_size: 12 over 1 process with at most 5 -> 3 x 4 (not 5 + 5 + 2)
    assert process_batch(TrainConfig(global_batch=12, batch_size=5), 1) == (4, 3)
    assert process_batch(TrainConfig(global_batch=12, batch_size=5), 2) == (3, 2)
    assert process_batch(TrainConfig(global_batch=7, batch_size=2), 1) == (1, 7)  # a prime: one sample at a time
    assert process_batch(TrainConfig(batch_size=4, grad_accum=3), 5) == (4, 3)  # no global batch: as given
    with pytest.raises(LBDTError) as e:  # 16 over 3 processes cannot keep the recipe: one clear line
        process_batch(load_config("a2d_lbdt4").train, 3)
    text = str(e.value)
    assert "\n" not in text and "train.global_batch=16" in text and "3 processes" in text
    assert "1, 2, 4, 8, 16" in text
    with pytest.raises(LBDTError, match="derived from the global batch"):
        load_config("a2d_lbdt4", ["train.grad_accum=2"])
    assert process_batch(load_config("a2d_lbdt4", ["train.global_batch=none", "train.grad_accum=2"]).train, 3) == (8, 2)
    with pytest.raises(LBDTError, match="train.global_batch must be >= 1"):
        load_config("a2d_lbdt4", ["train.global_batch=0"])
