"""Run configuration as typed data: dataclasses with one comment per field.

Presets (`src/lbdt/configs/*.yaml`) list only what differs from these defaults. This is the only
module that reads YAML.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from lbdt.data.sources import SOURCES
from lbdt.errors import LBDTError
from lbdt.io import write_text

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class ModelConfig:
    variant: str = "lbdt4"  # builder name in lbdt.models.build.VARIANTS: lbdt4 | lbdt1 | tiny
    imagenet_weights: str | None = None  # torchvision resnet .pth (local path or URL) for both streams
    zero_temporal: bool = False  # ablation: feed zeros instead of |frame - ref_frame| (spatial-only)


@dataclass
class DataConfig:
    dataset: str = "a2d"  # on-disk format under `root`: a2d | jhmdb | ytvos | davis | mevis
    root: str = "datasets/a2d"  # dataset root laid out as the original expects (see docs/datasets)
    train_split: str = "train"  # list file stem used for training (<root>/<split>.txt)
    val_split: str = "val"  # validation list stem, "holdout:<fraction>" (videos held out of train_split), or "" = none
    size: tuple[int, int] = (320, 320)  # (H, W) model input; both divisible by 32
    frame_gap: int | None = None  # k for the reference frame t-k; None = dataset default (a2d 6, jhmdb 5, ytvos 1 stored frame)
    word_vectors: str = "glove.840B.300d.txt"  # GloVe-format text file (the synthetic benchmark ships its own)
    max_words: int = 25  # N: tokens per sentence (truncate / pad)
    augment: bool = False  # clip-consistent flip / scale / colour jitter (the original used none)
    num_workers: int = 2  # DataLoader worker processes


@dataclass
class TrainConfig:
    epochs: int = 15  # passes over the training list
    batch_size: int = 8  # samples per process per step (the paper: 8 x 2 GPUs = 16)
    lr: float = 1e-4  # AdamW learning rate
    weight_decay: float = 5e-4  # AdamW weight decay (all parameters, as the original)
    milestones: tuple[int, ...] = (10, 12, 14)  # epochs after which lr is multiplied by `gamma`
    gamma: float = 0.5  # lr decay factor at each milestone
    grad_accum: int = 1  # micro-batches accumulated per optimizer step
    clip_grad_norm: float | None = None  # max gradient norm; None = no clipping (original)
    pos_weight: float = 1.5  # BCE positive-class weight
    bce_weight: float = 0.5  # loss = bce_weight * BCE + dice_weight * Dice
    dice_weight: float = 0.5
    seed: int = 3407  # torch / numpy / random seed
    device: str = "auto"  # auto (cuda:LOCAL_RANK when available, else cpu) | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (lbdt.runtime: auto = bf16 where native, fp16 + grad scaler on GPUs without bf16)
    max_steps: int | None = None  # stop after this many optimizer steps (smoke tests); None = all epochs
    max_minutes: float | None = None  # stop (and checkpoint) after this much wall time
    log_every: int = 20  # optimizer steps between CSV log lines
    checkpoint_every: int | None = None  # optimizer steps between mid-epoch `last.pt` saves; None = epoch ends only
    best_metric: str = "mean_iou"  # validation metric used to keep `best.pt`
    output_dir: str = "runs/default"  # where checkpoints, logs, config and plots go


@dataclass
class EvalConfig:
    protocol: str = "lbdt"  # lbdt (docs/evaluation.md: GT via the 320 round trip) | native (GT as is)
    threshold: float = 0.5  # probability threshold for the binary mask
    batch_size: int = 8  # evaluation batch size (no sample is ever dropped)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---------------------------------------------------------------- conversion, presets, overrides

_SECTIONS = ("model", "data", "train", "eval")
_CHOICES = {
    ("train", "precision"): ("auto", "fp32", "bf16", "fp16"),
    ("eval", "protocol"): ("lbdt", "native"),
    ("data", "dataset"): tuple(SOURCES),
}


def _at_least(low: float) -> tuple[Any, str]:
    return (lambda v: v >= low), f">= {low:g}"


_POSITIVE = ((lambda v: v > 0), "> 0")
# Allowed values of numeric fields (checked on every element of a tuple; None passes where the field allows it).
_RANGES: dict[tuple[str, str], tuple[Any, str]] = {
    ("data", "frame_gap"): _at_least(0),
    ("data", "max_words"): _at_least(1),
    ("data", "num_workers"): _at_least(0),
    ("train", "epochs"): _at_least(1),
    ("train", "batch_size"): _at_least(1),
    ("train", "lr"): _POSITIVE,
    ("train", "weight_decay"): _at_least(0),
    ("train", "milestones"): _at_least(1),
    ("train", "gamma"): _POSITIVE,
    ("train", "grad_accum"): _at_least(1),
    ("train", "clip_grad_norm"): _POSITIVE,
    ("train", "pos_weight"): _POSITIVE,
    ("train", "bce_weight"): _at_least(0),
    ("train", "dice_weight"): _at_least(0),
    ("train", "seed"): _at_least(0),
    ("train", "max_steps"): _at_least(1),
    ("train", "max_minutes"): _POSITIVE,
    ("train", "log_every"): _at_least(1),
    ("train", "checkpoint_every"): _at_least(1),
    ("eval", "threshold"): ((lambda v: 0 <= v <= 1), "in [0, 1]"),
    ("eval", "batch_size"): _at_least(1),
}
_NOT_EMPTY = {("data", "root"), ("data", "train_split"), ("data", "word_vectors"), ("train", "best_metric"),
              ("train", "output_dir"), ("model", "variant")}


def _check_value(section: str, name: str, value: Any, source: str) -> None:
    """The field's allowed values (`_CHOICES`, `_RANGES`, `_NOT_EMPTY`, finite numbers): else `LBDTError`."""
    allowed = _CHOICES.get((section, name))
    if allowed and value not in allowed:
        raise LBDTError(f"{source}: {section}.{name} must be one of {', '.join(allowed)}, got {value!r}")
    if (section, name) in _NOT_EMPTY and not str(value).strip():
        raise LBDTError(f"{source}: {section}.{name} must not be empty")
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, float) and not math.isfinite(v):
            raise LBDTError(f"{source}: {section}.{name} must be a finite number, got {v}")
        rule = _RANGES.get((section, name))
        if rule is not None and v is not None and not rule[0](v):
            raise LBDTError(f"{source}: {section}.{name} must be {rule[1]}, got {value!r}")


def to_dict(cfg: RunConfig) -> dict:
    """Plain nested dict (lists instead of tuples): YAML- and `weights_only`-safe."""

    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, (tuple, list)) else v

    return {s: {f.name: plain(getattr(getattr(cfg, s), f.name)) for f in dataclasses.fields(getattr(cfg, s))}
            for s in _SECTIONS}


def from_dict(d: dict, source: str = "config") -> RunConfig:
    """Build a `RunConfig` from a (possibly partial) nested dict; missing fields keep their defaults."""
    if d is not None and not isinstance(d, dict):
        raise LBDTError(f"{source}: expected a mapping of sections ({', '.join(_SECTIONS)}), got {type(d).__name__}")
    cfg = RunConfig()
    _apply(cfg, d or {}, source)
    return cfg


class _Dumper(yaml.SafeDumper):
    """Block-style sections with flow-style lists (`size: [320, 320]`)."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def dump_yaml(cfg: RunConfig) -> str:
    """The resolved configuration as YAML text (every field, in declaration order)."""
    return yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def save_yaml(cfg: RunConfig, path: str | os.PathLike) -> None:
    """Write `dump_yaml(cfg)` to `path` atomically."""
    write_text(path, dump_yaml(cfg))


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_config(preset_or_path: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults ← preset (a name in `lbdt/configs/` or a YAML path) ← dotted `section.field=value` overrides.

    Values are converted to the field's declared type (`train.lr=5e-5`, `data.size=[128,128]`,
    `train.clip_grad_norm=none`); an unknown key or a bad value raises `LBDTError`.
    """
    cfg = RunConfig()
    if preset_or_path:
        path = Path(preset_or_path)
        if not path.is_file():
            path = PRESET_DIR / f"{preset_or_path}.yaml"
        if not path.is_file():
            raise LBDTError(f"{preset_or_path}: neither a YAML file nor a preset "
                            f"(presets: {', '.join(available_presets())})")
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise LBDTError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        except UnicodeDecodeError as e:
            raise LBDTError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        if d is not None and not isinstance(d, dict):
            raise LBDTError(f"{path}: expected a mapping of sections ({', '.join(_SECTIONS)})")
        _apply(cfg, d or {}, str(path))
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or "." not in key:
            raise LBDTError(f"override {item!r}: expected section.field=value, e.g. train.lr=5e-5")
        section, _, name = key.strip().partition(".")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        _apply(cfg, {section: {name: value}}, f"override {item!r}")
    return cfg


def _apply(cfg: RunConfig, d: dict, source: str) -> None:
    """Set the fields named in nested dict `d` on `cfg`, converting and validating each value."""
    for section, values in d.items():
        if section not in _SECTIONS:
            raise LBDTError(f"{source}: unknown config section {section!r} (sections: {', '.join(_SECTIONS)})")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise LBDTError(f"{source}: section {section!r} must be a mapping of field: value")
        sub = getattr(cfg, section)
        hints = typing.get_type_hints(type(sub))
        for name, value in values.items():
            if name not in hints:
                known = ", ".join(f.name for f in dataclasses.fields(sub))
                raise LBDTError(f"{source}: unknown key {section}.{name} (known: {known})")
            try:
                converted = _convert(value, hints[name])
            except (TypeError, ValueError) as e:
                raise LBDTError(f"{source}: bad value for {section}.{name}: {e}") from None
            _check_value(section, name, converted, source)
            setattr(sub, name, converted)
    device = cfg.train.device
    if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise LBDTError(f"{source}: train.device must be auto, cpu, cuda or cuda:N, got {device!r}")
    h, w = cfg.data.size
    if h % 32 or w % 32 or h <= 0 or w <= 0:
        raise LBDTError(f"{source}: data.size must be positive multiples of 32, got {list(cfg.data.size)}")
    if cfg.train.bce_weight == 0 and cfg.train.dice_weight == 0:
        raise LBDTError(f"{source}: train.bce_weight and train.dice_weight are both 0 (the loss would be zero)")
    if list(cfg.train.milestones) != sorted(set(cfg.train.milestones)):
        raise LBDTError(f"{source}: train.milestones must be increasing epochs, got {list(cfg.train.milestones)}")


def _convert(value: Any, tp: Any) -> Any:
    """Convert a YAML-parsed value to type `tp` (int, float, bool, str, ... | None, tuple[...])."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union or origin is types.UnionType:  # X | None
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0])
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0]) for v in value)
        if len(value) != len(args):
            raise ValueError(f"expected {len(args)} values, got {list(value)}")
        return tuple(_convert(v, a) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"expected a string, got {value!r}")
        return "" if value is None else str(value)
    raise TypeError(f"unsupported field type {tp}")
