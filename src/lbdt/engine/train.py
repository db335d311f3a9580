"""`lbdt train`: the recipe of the original (docs/training.md, 'The recipe') as one loop you can read top
to bottom.

Single process or `torchrun` DDP, fp32 / bf16 / fp16, gradient accumulation and clipping,
validation after each epoch with `best.pt` tracking, and exact resume: the data order is a pure
function of (seed, epoch), and `last.pt` holds everything else (weights, optimizer, scheduler,
scaler, RNG states, position within the epoch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lbdt.checkpoint import make_state, read_checkpoint, save_checkpoint
from lbdt.config import ModelConfig, RunConfig, TrainConfig, from_dict, process_batch, save_yaml, to_dict
from lbdt.cpu_load import load_warning, read_load
from lbdt.data.collate import collate
from lbdt.data.synth import WORD_VECTORS
from lbdt.engine.datasets import build_dataset, make_loader
from lbdt.engine.distributed import (
    DistInfo,
    EpochSampler,
    barrier,
    broadcast_object,
    init_distributed,
    shutdown,
)
from lbdt.engine.inference import run_on_dataset
from lbdt.engine.interrupt import StopRequest, sigint_requests_stop, until_stopped
from lbdt.engine.rng_state import rng_state, set_rng_state
from lbdt.engine.trainlog import MetricsLog, plot_curves
from lbdt.errors import LBDTError
from lbdt.evaluation.evaluators import ReferSegEvaluator
from lbdt.io import atomic_write, crash_point, write_text
from lbdt.losses import segmentation_loss
from lbdt.models.build import build_model as build
from lbdt.paths import check_output_dir
from lbdt.runtime import Precision, autocast, resolve_precision

MAX_LOGGED_GROUPS = 8  # validation logs per-group mean IoU only for a handful of groups (not A2D's 43 classes)


def train(cfg: RunConfig, resume: bool | str = False) -> dict:
    """Train `cfg` into `cfg.train.output_dir`; `resume=True` continues from `<output_dir>/last.pt`,
    a path continues from that checkpoint. Returns a summary dict (best metric, last step, paths)."""
    check_output_dir(cfg.train.output_dir, "train.output_dir")  # before any work (lbdt.paths)
    info = init_distributed(cfg.train.device)
    try:
        with sigint_requests_stop() as interrupt:  # Ctrl-C: stop at the next step boundary, save last.pt
            return _train(cfg, resume, info, interrupt)
    finally:
        shutdown(info)


def _train(cfg: RunConfig, resume: bool | str, info: DistInfo, interrupt: StopRequest) -> dict:
    batch, accum = process_batch(cfg.train, info.world_size)  # train.global_batch kept under any world size
    tc = dataclasses.replace(cfg.train, batch_size=batch, grad_accum=accum)
    out = Path(tc.output_dir)
    precision = resolve_precision(tc.precision, info.device, training=True)
    ckpt = None
    if resume:
        path = out / "last.pt" if resume is True else Path(resume)
        ckpt = read_checkpoint(path, training=True)
        _check_resumable(cfg, from_dict(ckpt.get("config", {}), f"{path} config"), path)
    seed_everything(tc.seed)
    train_set, val_set = build_datasets(cfg)

    if info.is_main:
        if ckpt is not None:
            print(f"lbdt train: resuming from {path}: {_position(ckpt['epoch'], ckpt['step'], ckpt['epoch_batches'])}",
                  file=sys.stderr)
        print(_header(dataclasses.replace(cfg, train=tc), info, precision, train_set, val_set), file=sys.stderr)
        busy = load_warning(read_load(), option="--threads") if info.device.type == "cpu" else None
        if busy:
            print(f"lbdt train: warning: {busy}", file=sys.stderr)
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, out / "config.yaml")
        write_text(out / "runtime.json", json.dumps({"device": str(info.device), "world_size": info.world_size,
                                                     **_batch_record(tc, info.world_size),
                                                     **precision.as_dict()}, indent=2) + "\n")

    model = build_model(cfg).to(info.device)
    if ckpt is None and cfg.model.imagenet_weights:
        load_imagenet(model, cfg.model.imagenet_weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(tc.milestones), gamma=tc.gamma)
    scaler = torch.amp.GradScaler(info.device.type, enabled=precision.grad_scaler)
    epoch, step, epoch_batches, best, history = 0, 0, 0, None, []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        epoch, step, epoch_batches = ckpt["epoch"], ckpt["step"], ckpt["epoch_batches"]
        best, history = ckpt["best"], list(ckpt["history"])
        set_rng_state(ckpt["rng"])
        if info.is_main and best is not None:
            _repair_best(out, best, path, ckpt)
    net = DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None) \
        if info.distributed else model

    sampler = EpochSampler(len(train_set), seed=tc.seed, shuffle=True, rank=info.rank, world_size=info.world_size)
    loader_gen = torch.Generator()
    loader = DataLoader(train_set, batch_size=tc.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=cfg.data.num_workers, generator=loader_gen, worker_init_fn=_seed_worker,
                        pin_memory=info.device.type == "cuda")
    log = MetricsLog(out / "metrics.csv", keep_up_to_step=step, enabled=info.is_main,
                     fresh=ckpt is None)
    mixed = autocast(info.device, precision)
    steps_per_epoch = math.ceil(math.ceil(len(train_set) / info.world_size) / tc.batch_size / tc.grad_accum)
    total_steps = steps_per_epoch * tc.epochs if tc.max_steps is None else min(tc.max_steps, steps_per_epoch * tc.epochs)
    started = time.monotonic()
    stop = False

    def checkpoint(name: str, epoch_: int, batches_: int) -> None:
        if info.is_main:
            training = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(), "epoch": epoch_, "step": step, "epoch_batches": batches_,
                        "rng": rng_state(), "best": best, "history": history}
            save_checkpoint(make_state(model, variant=cfg.model.variant, config=to_dict(cfg),
                                       word_table=cfg.data.word_vectors, training=training), out / name)
        barrier(info)

    bar = tqdm(total=total_steps, initial=min(step, total_steps), disable=not info.is_main, unit="step",
               dynamic_ncols=True)
    while epoch < tc.epochs and not stop:
        sampler.set_epoch(epoch, start=epoch_batches * tc.batch_size)
        train_set.set_epoch(epoch)  # per-epoch augmentation draws (a function of seed, epoch, index)
        loader_gen.manual_seed(tc.seed * 1_000_003 + epoch)
        net.train()
        n_batches = epoch_batches + len(loader)
        window_samples, window_start = 0, time.perf_counter()
        # one process: a Ctrl-C ends the epoch's loop at the next batch; under DDP rank 0's broadcast decides
        batches = loader if info.distributed else until_stopped(loader, interrupt)
        for i, batch in enumerate(batches, start=epoch_batches):
            batch = batch.to(info.device, non_blocking=True)
            group_end = (i + 1) % tc.grad_accum == 0 or i + 1 == n_batches
            sync = contextlib.nullcontext() if group_end or not info.distributed else net.no_sync()
            with sync:
                with mixed:
                    logits = net(batch.frames, batch.ref_frames, batch.word_vectors, batch.word_mask)
                terms = segmentation_loss(logits, batch.masks, pos_weight=tc.pos_weight,
                                          bce_weight=tc.bce_weight, dice_weight=tc.dice_weight)
                scaler.scale(terms["loss"] / tc.grad_accum).backward()
            window_samples += len(batch) * info.world_size
            if not group_end:
                continue
            if tc.clip_grad_norm is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            epoch_batches = i + 1

            throughput = window_samples / max(time.perf_counter() - window_start, 1e-9)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{terms['loss'].item():.4f}", samples_s=f"{throughput:.1f}")
            if step % tc.log_every == 0 or step == 1:
                log.write(step, epoch + 1, "train", {k: v.item() for k, v in terms.items()}
                          | {"lr": optimizer.param_groups[0]["lr"], "samples_per_s": throughput})
                window_samples, window_start = 0, time.perf_counter()
            stop = (tc.max_steps is not None and step >= tc.max_steps) or (
                tc.max_minutes is not None and (time.monotonic() - started) / 60 >= tc.max_minutes)
            if tc.max_minutes is not None or info.distributed:  # clocks and Ctrl-C differ across ranks: rank 0 decides
                stop = bool(broadcast_object(stop or interrupt.requested, info))
            if stop and epoch_batches < n_batches:
                checkpoint("last.pt", epoch, epoch_batches)
                break
            if tc.checkpoint_every and step % tc.checkpoint_every == 0 and epoch_batches < n_batches:
                checkpoint("last.pt", epoch, epoch_batches)
        if interrupt.requested and not stop and not info.distributed:  # Ctrl-C: stopped at a step boundary
            stop = True
            if epoch_batches < n_batches:
                checkpoint("last.pt", epoch, epoch_batches)
        if epoch_batches < n_batches:  # stopped mid-epoch: `last.pt` written
            break
        # ---- end of epoch: schedule, validate, keep last / best
        scheduler.step()
        epoch, epoch_batches = epoch + 1, 0
        metrics = validate(model, val_set, cfg, info, precision) if val_set is not None else {}
        if metrics:
            log.write(step, epoch, "val", metrics)
            history.append({"epoch": epoch, "step": step} | metrics)
            if info.is_main:
                bar.write(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        value = metrics.get(tc.best_metric)
        improved = value is not None and (best is None or value > best["value"])
        if improved:
            best = {"metric": tc.best_metric, "value": float(value), "epoch": epoch, "step": step}
        checkpoint("last.pt", epoch, 0)
        if metrics and value is None:  # after saving: the epoch is kept, fix the name and --resume
            raise LBDTError(f"train.best_metric {tc.best_metric!r} is not a validation metric "
                            f"(metrics: {', '.join(sorted(metrics))})")
        if improved and info.is_main:
            _copy_atomic(out / "last.pt", out / "best.pt")
        barrier(info)
    bar.close()
    log.close()
    if info.is_main:
        plot_curves(out / "metrics.csv", out / "curves.png", tc.best_metric)
        if interrupt.requested:
            print(f"lbdt train: interrupted (Ctrl-C): saved {out / 'last.pt'} at "
                  f"{_position(epoch, step, epoch_batches)}; continue with the same command and --resume",
                  file=sys.stderr)
    return {"output_dir": str(out), "step": step, "epoch": epoch, "best": best, "history": history,
            "device": str(info.device), **_batch_record(tc, info.world_size), **precision.as_dict(),
            "interrupted": interrupt.requested,
            "last_checkpoint": str(out / "last.pt"), "finished": epoch >= tc.epochs}


# ---------------------------------------------------------------- pieces of the loop


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CUDA included)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_datasets(cfg: RunConfig) -> tuple[Dataset, Dataset | None]:
    """(training set, validation set or None) of `cfg.data` (nothing is written: the data must exist, e.g.
    `lbdt synth` for the synthetic benchmark). `data.val_split="holdout:<f>"` validates on a fixed fraction f
    of the training videos, removed from training (`lbdt.engine.datasets`)."""

    dc = cfg.data
    if dc.word_vectors == WORD_VECTORS and not Path(dc.root).is_dir():  # the synthetic benchmark's own table
        raise LBDTError(f"data.root {dc.root}: not found; this configuration trains on the synthetic benchmark, "
                        f"write it first: lbdt synth --format {dc.dataset} --out {dc.root}")
    train_set = build_dataset(dc, dc.train_split, train=True, with_original_mask=False, seed=cfg.train.seed)
    val_set = None
    if dc.val_split:
        val_set = build_dataset(dc, dc.val_split, train=False, with_original_mask=cfg.eval.protocol == "native")
    return train_set, val_set


def build_model(cfg: RunConfig) -> nn.Module:
    """The network of `cfg.model` (variant, spatial-only ablation), freshly initialised."""

    return build(cfg.model.variant, zero_temporal=cfg.model.zero_temporal)


def load_imagenet(model: nn.Module, source: str) -> None:
    """Initialise both ResNet streams from torchvision ImageNet weights: a local `.pth` or a URL."""
    if "://" not in source:
        model.load_imagenet(source)
        return
    try:
        state = torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=True, progress=True)
    except Exception as e:  # noqa: BLE001 - offline, DNS failure, HTTP error, bad hash: all mean the same here
        raise LBDTError(f"cannot download ImageNet weights from {source} ({type(e).__name__}: {e}); "
                        f"download the file elsewhere and set model.imagenet_weights=/path/to/file.pth") from None
    model.load_imagenet(state)


def validate(model: nn.Module, dataset: Dataset, cfg: RunConfig, info: DistInfo,
             precision: Precision) -> dict[str, float]:
    """`ReferSegEvaluator` metrics of `model` on `dataset` (every sample, `cfg.eval` protocol, through
    `run_on_dataset`), computed on rank 0 ({} on other ranks). When the samples carry groups (the synthetic
    benchmark's sentence types, ...) and there are at most `MAX_LOGGED_GROUPS`, each group's mean IoU is
    added as `mean_iou_<group>`."""
    if not info.is_main:
        return {}

    loader = make_loader(dataset, batch_size=cfg.eval.batch_size, shuffle=False, num_workers=cfg.data.num_workers)
    report = run_on_dataset(model, loader, evaluators={"refer": ReferSegEvaluator()}, protocol=cfg.eval.protocol,
                            threshold=cfg.eval.threshold, device=info.device, precision=precision, progress=True,
                            desc="validate")["refer"]
    model.train()
    out = {k: float(v) for k, v in report.items() if isinstance(v, (int, float)) and k != "N"}
    groups = report.get("by_group", {})
    if len(groups) <= MAX_LOGGED_GROUPS:
        for group, sub in groups.items():
            out[f"mean_iou_{group}"] = float(sub["mean_iou"])
    return out


def _seed_worker(worker_id: int) -> None:
    """Derive numpy / python seeds in each loader worker from its torch seed (itself set by the loader's
    generator, which is re-seeded from (seed, epoch) at every epoch)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def _batch_record(tc: TrainConfig, world_size: int) -> dict[str, int]:
    """What runtime.json and the summary record of the batch actually used (`config.process_batch`)."""
    return {"global_batch": tc.batch_size * tc.grad_accum * world_size, "per_process_batch": tc.batch_size,
            "grad_accum": tc.grad_accum}


def _position(epoch: int, step: int, epoch_batches: int) -> str:
    """Where a checkpoint stands, 1-based epochs as the log counts them."""
    if epoch_batches == 0:
        return f"step {step}, start of epoch {epoch + 1}"
    return f"step {step}, epoch {epoch + 1} after {epoch_batches} batches"


def _header(cfg: RunConfig, info: DistInfo, precision: Precision, train_set: Dataset, val_set: Dataset | None) -> str:
    """The start-up lines: where the run writes, what it runs on and in which precision (and why), on how much data."""
    tc = cfg.train
    per_epoch = math.ceil(math.ceil(len(train_set) / info.world_size) / tc.batch_size / tc.grad_accum)
    val = f", {len(val_set)} validation samples ({cfg.data.val_split})" if val_set is not None else ", no validation"
    limit = f", stops at step {tc.max_steps}" if tc.max_steps is not None else ""
    limit += f", stops after {tc.max_minutes:g} min" if tc.max_minutes is not None else ""
    return (f"lbdt train: writing {tc.output_dir}/ | {info.world_size} process(es) on {info.device}, "
            f"{precision.name} ({precision.reason}), {torch.get_num_threads()} CPU threads\n"
            f"lbdt train: {len(train_set)} training samples ({cfg.data.dataset} at {cfg.data.root}, split "
            f"{cfg.data.train_split}){val} | batch {tc.batch_size} x {tc.grad_accum} accumulated, {per_epoch} steps per "
            f"epoch, {tc.epochs} epochs{limit}")


# every model field defines the network except its initialisation (the checkpoint's weights replace it)
RESUME_MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name != "imagenet_weights")


def _check_resumable(cfg: RunConfig, saved: RunConfig, path: Path) -> None:
    """Refuse to resume with settings that change the model (every `model` field but `imagenet_weights`), what it
    is fed (dataset, size, k, N) or the data order."""
    for section, name in (*(("model", f) for f in RESUME_MODEL_FIELDS), ("data", "dataset"), ("data", "size"),
                          ("data", "frame_gap"), ("data", "max_words"), ("train", "batch_size"), ("train", "seed"),
                          ("train", "grad_accum"), ("train", "global_batch"), ("data", "root"),
                          ("data", "train_split")):
        a, b = getattr(getattr(cfg, section), name), getattr(getattr(saved, section), name)
        if a != b:
            raise LBDTError(f"{path}: cannot resume with {section}.{name}={a!r}; the checkpoint used {b!r}")


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_write(dst, fsync=True) as tmp:
        shutil.copyfile(src, tmp)
        crash_point("best-copy")


def _repair_best(out: Path, best: dict, resumed_from: Path, ckpt: dict) -> None:
    """On resume: `best.pt` must hold the epoch `best` reports. A run killed while copying it leaves it missing
    or one improvement behind; the checkpoint being resumed then is that epoch's, so it is copied again."""
    path = out / "best.pt"
    try:
        held = read_checkpoint(path, training=True)["epoch"] if path.is_file() else None
    except LBDTError:  # a torn or foreign file is as good as missing
        held = None
    if held == best["epoch"]:
        return
    if ckpt["epoch"] == best["epoch"] and ckpt["epoch_batches"] == 0:
        _copy_atomic(resumed_from, path)
    else:
        print(f"lbdt train: warning: {path} does not hold the best epoch {best['epoch']} and {resumed_from} "
              f"(epoch {ckpt['epoch']}) cannot restore it", file=sys.stderr)
