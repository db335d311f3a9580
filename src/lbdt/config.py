"""Run configuration as typed data: dataclasses with one comment per field.

Presets (`src/lbdt/configs/*.yaml`) list only what differs from these defaults. This is the only
module that reads YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class ModelConfig:
    variant: str = "lbdt4"  # builder name in lbdt.models.build.VARIANTS: lbdt4 | lbdt1 | tiny
    imagenet_weights: Optional[str] = None  # torchvision resnet .pth (local path or URL) for both streams
    zero_temporal: bool = False  # ablation: feed zeros instead of |frame - ref_frame| (spatial-only)


@dataclass
class DataConfig:
    dataset: str = "a2d"  # on-disk format under `root`: a2d | jhmdb | ytvos
    root: str = "datasets/a2d"  # dataset root laid out as the original expects (see docs/datasets)
    train_split: str = "train"  # list file stem used for training (<root>/<split>.txt)
    val_split: str = "val"  # list file stem used for validation after each epoch ("" = none)
    size: tuple[int, int] = (320, 320)  # (H, W) model input; both divisible by 32
    frame_gap: Optional[int] = None  # k for the reference frame t-k; None = dataset default (a2d 6, jhmdb 5, ytvos 1 stored frame)
    word_vectors: str = "glove.840B.300d.txt"  # GloVe-format text file (the synthetic benchmark ships its own)
    max_words: int = 25  # N: tokens per sentence (truncate / pad)
    augment: bool = False  # clip-consistent flip / scale / colour jitter (the original used none)
    num_workers: int = 2  # DataLoader worker processes
    synthetic_seed: Optional[int] = None  # if set and `root` is missing, write the synthetic benchmark there first


@dataclass
class TrainConfig:
    epochs: int = 15  # passes over the training list
    batch_size: int = 8  # samples per process per step (the paper: 8 x 2 GPUs = 16)
    lr: float = 1e-4  # AdamW learning rate
    weight_decay: float = 5e-4  # AdamW weight decay (all parameters, as the original)
    milestones: tuple[int, ...] = (10, 12, 14)  # epochs after which lr is multiplied by `gamma`
    gamma: float = 0.5  # lr decay factor at each milestone
    grad_accum: int = 1  # micro-batches accumulated per optimizer step
    clip_grad_norm: Optional[float] = None  # max gradient norm; None = no clipping (original)
    pos_weight: float = 1.5  # BCE positive-class weight
    bce_weight: float = 0.5  # loss = bce_weight * BCE + dice_weight * Dice
    dice_weight: float = 0.5
    seed: int = 3407  # torch / numpy / random seed
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 uses a grad scaler; CUDA only for fp16)
    max_steps: Optional[int] = None  # stop after this many optimizer steps (smoke tests); None = all epochs
    max_minutes: Optional[float] = None  # stop (and checkpoint) after this much wall time
    log_every: int = 20  # optimizer steps between CSV log lines
    best_metric: str = "mean_iou"  # validation metric used to keep `best.pt`
    output_dir: str = "runs/default"  # where checkpoints, logs, config and plots go


@dataclass
class EvalConfig:
    protocol: str = "lbdt"  # lbdt (spec §4.1: GT via the 320 round trip) | native (GT at original size)
    threshold: float = 0.5  # probability threshold for the binary mask
    batch_size: int = 8  # evaluation batch size (no sample is ever dropped)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
