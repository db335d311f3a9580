"""The `lbdt` command. Each subcommand parses its arguments and calls one library function.

Subcommands register themselves in `_COMMANDS` with `@command(name, help, _<name>_args)`; imports of
heavy modules happen inside the handlers so `lbdt --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from lbdt import __version__
from lbdt.errors import LBDTError

# name -> (adds arguments to its parser, runs it); filled below, one block per subcommand.
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None]):
    """Register `run(args) -> exit code` as subcommand `name`; `arguments(parser)` adds its options."""

    def wrap(run: Callable[[argparse.Namespace], int]):
        _COMMANDS[name] = (help, arguments, run)
        return run

    return wrap

# ---------------------------------------------------------------- argument types
# argparse turns an `ArgumentTypeError` into one line naming the option (`argument --threshold: ...`) and exit 2.


def _int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _float_in(low: float, high: float, *, high_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (low <= value < high if high_open else low <= value <= high):
            raise argparse.ArgumentTypeError(f"must be in [{low:g}, {high:g}{')' if high_open else ']'}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def _model_side(text: str) -> int:
    """One side of a model input size: a positive multiple of 32 (the network's stride)."""
    value = _int_at_least(1, MAX_SIDE)(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"model sizes must be positive multiples of 32, got {value}")
    return value


def _device(text: str) -> str:
    """A device this machine has, as `lbdt.runtime.resolve_device` decides (auto, cpu, cuda, cuda:N)."""
    from lbdt.runtime import resolve_device

    try:
        resolve_device(text)
    except LBDTError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _comma_list(item: Callable[[str], object]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        parts = [p.strip() for p in text.split(",")]
        if not parts or any(p == "" for p in parts):
            raise argparse.ArgumentTypeError(f"expected a comma list without empty items, got {text!r}")
        return tuple(item(p) for p in parts)

    parse.__name__ = "comma list"
    return parse


def _dataset(*, server: bool = False) -> Callable[[str], str]:
    """A dataset name of `lbdt.data.sources.SOURCES` (with `server`: one with a submission server); read when
    the option is given, so `lbdt --help` does not load the sources."""

    def parse(text: str) -> str:
        from lbdt.data.sources import SOURCES

        names = [n for n, s in SOURCES.items() if not server or s.submission_top is not None]
        if text not in names:
            raise argparse.ArgumentTypeError(f"unknown dataset {text!r}; choose one of {', '.join(names)}")
        return text

    parse.__name__ = "dataset"
    return parse


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(allowed)}, got {text!r}")
        return text

    return parse


MAX_SIDE = 4096  # largest image / model side the CLI accepts (larger ones only exhaust memory)
_SEED = _int_at_least(0, 2**63 - 1)
_POSITIVE = _int_at_least(1)
_NON_NEGATIVE = _int_at_least(0)


# ---------------------------------------------------------------- shared options
def _runtime_args(p: argparse.ArgumentParser, *, evaluation: bool = False) -> None:
    """--device and --precision, with one meaning everywhere (lbdt.runtime); `evaluation`: no --precision
    means fp32 (lbdt.runtime.EVALUATION_DEFAULT) instead of auto."""
    p.add_argument("--device", type=_device, default="auto",
                   help="auto (default: cuda if usable, else cpu), cpu, cuda or cuda:N")
    auto = ("auto: bf16 on GPUs that have it (else fp16) and on CPUs with native bf16, else fp32; an explicit "
            "bf16 on a CPU without native bf16 runs emulated (much slower)")
    p.add_argument("--precision", default=None if evaluation else "auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help=f"default fp32, so reported numbers do not depend on the machine; {auto}" if evaluation
                   else f"{auto} (default)")


def _threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_POSITIVE, metavar="N",
                   help="torch intra-op threads (default: torch's choice); fewer on a busy machine, which lbdt warns about")


def _set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _frame_gap_args(p: argparse.ArgumentParser, default: str) -> None:
    """--frame-gap K (K >= 1) and --spatial-only (K = 0: every frame is its own reference, so the temporal input
    is zero: the spatial-only ablation, only on purpose)."""
    p.add_argument("--frame-gap", type=_frame_gap, help=f"k >= 1: reference frame t-k (default: {default})")
    p.add_argument("--spatial-only", action="store_true",
                   help="k = 0, the spatial-only ablation: every frame is its own reference (zero temporal input)")


def _frame_gap(text: str) -> int:
    value = _NON_NEGATIVE(text)
    if value == 0:
        raise argparse.ArgumentTypeError("0 pairs every frame with itself, so the temporal stream sees nothing (the "
                                         "spatial-only ablation); pass --spatial-only to run that on purpose")
    return value


def _chosen_frame_gap(args: argparse.Namespace) -> int | None:
    if args.spatial_only and args.frame_gap is not None:
        raise LBDTError("--spatial-only means --frame-gap 0; give one of them")
    return 0 if args.spatial_only else args.frame_gap


def _word_vectors_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--word-vectors", "--glove", dest="word_vectors", metavar="PATH",
                   help="GloVe-format word-vector file (.txt or .zip), for checkpoints without their own table "
                        "(default: the checkpoint's own or named table; --glove is an alias)")


# ---------------------------------------------------------------- subcommands
# (each block: `def _<name>_args(p)` adding options, then `@command(name, help, _<name>_args)` on the runner)


# ---- train / show-config (docs/training.md)
def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("preset", help="preset name (a2d_lbdt4, a2d_lbdt1, ytvos_lbdt4, mevis_lbdt4, longrvos_lbdt4, "
                                  "synthetic_tiny) or a YAML file")
    p.add_argument("overrides", nargs="*", metavar="SECTION.FIELD=VALUE", help="e.g. train.lr=5e-5 data.size=[128,128]")


@command("show-config", "print the resolved configuration (preset + overrides) as YAML", _config_args)
def _show_config(args: argparse.Namespace) -> int:
    from lbdt.config import dump_yaml, load_config

    print(dump_yaml(load_config(args.preset, args.overrides)), end="")
    return 0


def _train_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from CHECKPOINT, or from <train.output_dir>/last.pt when no path is given")
    _threads_arg(p)


@command("train", "train LBDT (one process, or DDP under torchrun)", _train_args)
def _train(args: argparse.Namespace) -> int:
    from lbdt.config import load_config
    from lbdt.engine.train import train

    cfg = load_config(args.preset, args.overrides)
    _set_threads(args)
    result = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        best = result["best"]
        print(f"{'stopped' if result['interrupted'] else 'done'}: step {result['step']}, epoch {result['epoch']}, "
              f"{result['precision']} on {result['device']} "
              f"({result['precision_reason']}), output in {result['output_dir']}"
              + (f"; best {best['metric']} {best['value']:.4f} at epoch {best['epoch']}" if best else ""))
    return 130 if result["interrupted"] else 0


# ---- info / convert-official (docs/model.md)
def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="variant name (lbdt4, lbdt1, lbdt4_r101, tiny): parameters and GMACs; "
                                 "weights name (official-lbdt4, synthetic-tiny, ...) or checkpoint file: its model card")
    p.add_argument("--size", nargs=2, type=_model_side, default=(320, 320), metavar=("H", "W"),
                   help="input size for the MAC count (default 320 320)")
    p.add_argument("--words", type=_POSITIVE, default=25, help="sentence length N for the MAC count (default 25)")


@command("info", "print a model variant's parameter count and GMACs, or a weights' model card", _info_args)
def _info(args: argparse.Namespace) -> int:
    from lbdt.models.build import VARIANTS
    from lbdt.models.complexity import model_summary

    if args.model not in VARIANTS:
        from lbdt.pretrained import card_of
        from lbdt.registry import format_card

        print(format_card(card_of(args.model)))
        return 0
    s = model_summary(args.model, size=tuple(args.size), n_words=args.words)
    print(f"{s['model']}: {s['parameters']:,} parameters, {s['gmacs']:.2f} GMACs per frame at {s['size']} "
          f"(N = {args.words} words)")
    return 0


def _convert_official_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="IN.pth", help="official LBDT checkpoint (JointModel state dict)")
    p.add_argument("dst", metavar="OUT.pt", help="lbdt checkpoint to write")


@command("convert-official", "convert an official LBDT checkpoint to an lbdt checkpoint (strict)",
         _convert_official_args)
def _convert_official(args: argparse.Namespace) -> int:
    from lbdt.pretrained import convert_official_checkpoint

    runnable = convert_official_checkpoint(args.src, args.dst)
    print(f"{args.src}: {runnable.variant} -> {args.dst}")
    return 0


# ---- download (README "Weights for real videos")
def _download_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="what to install (see --list): official-lbdt4, official-lbdt1, glove-840b, "
                                           "imagenet-resnet50")
    p.add_argument("--list", action="store_true", help="show the known weights, their sizes and sources, and what is "
                                                       "installed where")
    p.add_argument("--from", dest="source", metavar="PATH_OR_URL",
                   help="install an already-downloaded file or a mirror URL (same checks); the files are "
                        "a2d_lbdt4.pth, a2d_lbdt1.pth, glove.840B.300d.zip (or its .txt), resnet50-0676ba61.pth")
    p.add_argument("--max-words", type=_POSITIVE, metavar="N",
                   help="word tables: keep only the N most frequent words (a full install needs all 2,196,017)")
    p.add_argument("--fp16", action="store_true", help="word tables: store vectors in float16 (half the size)")
    p.add_argument("--force", action="store_true", help="fetch and install again even when installed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("download", "fetch, verify and install known weights (official LBDT checkpoints, GloVe, ImageNet ResNet-50)",
         _download_args)
def _download(args: argparse.Namespace) -> int:
    from lbdt.download import install
    from lbdt.registry import format_list

    given = [flag for flag, value in (("--from", args.source), ("--max-words", args.max_words), ("--fp16", args.fp16),
                                      ("--force", args.force)) if value not in (None, False)]
    if args.list and args.name:
        raise LBDTError(f"--list takes no NAME (got {args.name!r}): `lbdt download --list` or `lbdt download NAME`")
    if args.list or not args.name:
        if given:
            raise LBDTError(f"{', '.join(given)}: need a NAME to install (`lbdt download NAME {given[0]} ...`)")
        print(format_list())
        return 0
    print(install(args.name, source=args.source, max_words=args.max_words, fp16=args.fp16, force=args.force,
                  progress=not args.no_progress).message())
    return 0


# ---- prepare-data (docs/datasets/*.md, "Preparing from the official release")
def _prepare_data_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    helps = {"a2d": "A2D-Sentences (clips320H mp4s, videoset.csv, text_annotations/)",
             "jhmdb": "J-HMDB-Sentences (Rename_Images/, puppet_mask/, jhmdb_annotation.txt)",
             "ytvos": "Ref-YouTube-VOS (meta_expressions/, train/, valid/)",
             "davis": "Ref-DAVIS17 (DAVIS/ 2017 unsupervised trainval 480p, davis_text_annotations/Davis17_annot*.txt)",
             "mevis": "MeViS (train/, valid_u/, valid/): checked, then linked into --out",
             "longrvos": "Long-RVOS (train/, valid/, test/): checked, then linked into --out"}
    for name, text in helps.items():
        d = sub.add_parser(name, help=text, description=text)
        d.add_argument("--raw", required=True, help="folder holding the official download(s), unpacked")
        d.add_argument("--out", help=f"dataset root to build (default datasets/{name})")
        d.add_argument("--copy", action="store_true", help="copy files instead of hard-linking them")
        d.add_argument("--no-progress", action="store_true", help="no progress bars")
        if name == "a2d":
            d.add_argument("--jpeg-quality", type=_int_at_least(1, 100), default=95, help="quality of the extracted JPEG frames")
        if name == "jhmdb":
            d.add_argument("--seed", type=_SEED, default=0, help="seed of the per-video frame choice")
            d.add_argument("--frames-per-video", type=_POSITIVE, default=3, help="evaluated frames per video")
        if name == "ytvos":
            d.add_argument("--val-fraction", type=_float_in(0.0, 1.0, high_open=True), default=0.05,
                           help="share of train videos held out as val/, in [0, 1)")
            d.add_argument("--seed", type=_SEED, default=0, help="seed of the held-out video choice")
            d.add_argument("--drop-absent", action="store_true",
                           help="leave out frames where the referred object is not annotated (needs train/meta.json)")


@command("prepare-data", "build a dataset's layout and list files from its official release", _prepare_data_args)
def _prepare_data(args: argparse.Namespace) -> int:
    from lbdt.tools.prepare_data import prepare_dataset

    options = {k: getattr(args, k) for k in ("jpeg_quality", "seed", "frames_per_video", "val_fraction",
                                             "drop_absent") if hasattr(args, k)}
    summary = prepare_dataset(args.dataset, args.raw, args.out if args.out is not None else f"datasets/{args.dataset}", copy=args.copy,
                              show_progress=not args.no_progress, **options)
    print(summary.format())
    return 0


# ---- evaluate (docs/evaluation.md)
def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="our checkpoint (.pt), an official LBDT checkpoint, a shipped name or a URL")
    p.add_argument("--dataset", required=True, type=_dataset(), metavar="DATASET",
                   help="on-disk format of --root (a2d, jhmdb, ytvos, davis, mevis, ...: docs/datasets/)")
    p.add_argument("--root", required=True, help="dataset root (see docs/datasets/)")
    p.add_argument("--split", required=True,
                   help="list to evaluate, e.g. val (A2D test list), test, valid (Ref-YTVOS), val (Ref-DAVIS17), "
                        "valid_u / valid (MeViS), valid / test (Long-RVOS)")
    p.add_argument("--protocol", choices=("lbdt", "native"),
                   help="resize rule (docs/evaluation.md); default lbdt for a2d/jhmdb, native for ytvos")
    p.add_argument("--threshold", type=_float_in(0.0, 1.0), default=0.5, help="probability threshold (default 0.5)")
    p.add_argument("--batch-size", type=_POSITIVE, default=8, help="samples per forward pass (none is ever dropped)")
    _runtime_args(p, evaluation=True)
    p.add_argument("--workers", type=_NON_NEGATIVE, default=0, help="DataLoader worker processes")
    _word_vectors_arg(p)
    p.add_argument("--out", help="folder for metrics.json, masks/ and (Ref-YTVOS / MeViS valid) submission.zip")
    p.add_argument("--save-masks", action="store_true", help="also write every mask as a 0/255 PNG under OUT/masks/ (davis: and each group's merged "
                        "index masks under OUT/anno_<i>/, the DAVIS toolkit's results layout)")
    p.add_argument("--no-coco", action="store_true", help="skip COCO mask mAP")
    p.add_argument("--strict-precision", action="store_true", help="P@K counts IoU > K (MTTR) instead of >= K (LBDT)")
    p.add_argument("--jf", action=argparse.BooleanOptionalAction, default=None,
                   help="DAVIS J&F per expression (default: on for ytvos)")
    p.add_argument("--size", nargs=2, type=_model_side, metavar=("H", "W"),
                   help="model input size, multiples of 32 (default: the checkpoint's)")
    _frame_gap_args(p, "the dataset's k")
    p.add_argument("--limit", type=_POSITIVE, help="only the first N samples (smoke test)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("evaluate", "evaluate a model on a dataset split: every metric, masks, submission zip", _evaluate_args)
def _evaluate(args: argparse.Namespace) -> int:
    import torch.distributed

    from lbdt.engine.evaluate import EvaluateSettings, evaluate, format_report

    report = evaluate(
        args.checkpoint, EvaluateSettings(
            dataset=args.dataset, root=args.root, split=args.split, protocol=args.protocol,
            threshold=args.threshold, batch_size=args.batch_size, device=args.device, precision=args.precision,
            num_workers=args.workers, word_vectors=args.word_vectors, output_dir=args.out,
            save_masks=args.save_masks, coco=not args.no_coco, strict_precision=args.strict_precision, jf=args.jf,
            size=tuple(args.size) if args.size else None, frame_gap=_chosen_frame_gap(args), limit=args.limit,
            progress=not args.no_progress))
    if torch.distributed.is_initialized():  # started by torchrun: every rank returned rank 0's report
        torch.distributed.destroy_process_group()
    if os.environ.get("RANK", "0") == "0":
        print(format_report(report))
    return 0


# ---- validate-submission (docs/evaluation.md)
def _validate_submission_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("zip", metavar="ZIP", help="submission zip (ytvos: Annotations/<video>/<exp_id>/<frame>.png; "
                                              "mevis: <video>/<exp_id>/<frame>.png)")
    p.add_argument("--meta", required=True, help="the split's meta_expressions.json (ytvos: meta_expressions/valid/; "
                                                 "mevis: valid/)")
    p.add_argument("--format", dest="fmt", type=_dataset(server=True), default="ytvos",
                   help="server the zip is for (default ytvos)")
    p.add_argument("--test-meta", help="meta_expressions/test/meta_expressions.json: its videos are not expected")
    p.add_argument("--images", help="valid/JPEGImages folder: also check every PNG against its frame's size")


@command("validate-submission", "check a Ref-YouTube-VOS or MeViS submission zip: missing, extra and malformed files",
         _validate_submission_args)
def _validate_submission(args: argparse.Namespace) -> int:
    from lbdt.evaluation.submission import validate_submission

    problems = validate_submission(args.zip, args.meta, args.test_meta, images_root=args.images, fmt=args.fmt)
    for problem in problems:
        print(problem)
    print(f"{args.zip}: {len(problems)} problem(s)" if problems else f"{args.zip}: OK")
    return 1 if problems else 0


# ---- synth (docs/datasets/synthetic.md)
def _synth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", dest="fmt", type=_dataset(), default="a2d", metavar="DATASET",
                   help="on-disk format to write: a dataset of docs/datasets/ (default a2d)")
    p.add_argument("--out", required=True, help="folder to create (must not exist, or be empty)")
    p.add_argument("--seed", type=_SEED, default=0, help="random seed; the same seed writes identical files")
    p.add_argument("--videos", nargs=3, type=_NON_NEGATIVE, default=(360, 60, 90), metavar=("TRAIN", "VAL", "TEST"),
                   help="videos per split (default 360 60 90); davis: train, val (TEST unused); "
                        "mevis: train, valid_u, valid; longrvos: train, valid, test")
    p.add_argument("--frames", type=_POSITIVE, default=14, help="frames per video (default 14)")
    p.add_argument("--size", nargs=2, type=_int_at_least(8, MAX_SIDE), default=(96, 128), metavar=("H", "W"),
                   help=f"frame size, 8 to {MAX_SIDE} (default 96 128)")
    p.add_argument("--annotated", type=_POSITIVE, default=1, help="annotated frames per video (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("synth", "write the synthetic referring-video benchmark (motion vs appearance sentences)", _synth_args)
def _synth(args: argparse.Namespace) -> int:
    from lbdt.data.synth import write_benchmark

    s = write_benchmark(args.out, fmt=args.fmt, seed=args.seed, videos=args.videos, frames=args.frames,
                        size=tuple(args.size), annotated=args.annotated, overwrite=args.overwrite,
                        progress=not args.no_progress)
    print(f"{args.out}: synthetic benchmark ({s['format']} format, seed {s['seed']}): "
          + ", ".join(f"{k} {s['videos'][k]} videos / {n} samples" for k, n in s["samples"].items()))
    return 0


# ---- benchmark (docs/performance.md)
def _benchmark_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="lbdt4", help="model variant (lbdt4, lbdt1, tiny, ...)")
    p.add_argument("--size", type=_model_side, nargs=2, default=(320, 320), metavar=("H", "W"),
                   help="input size, multiples of 32")
    p.add_argument("--device", type=_device, default="auto",
                   help="auto (default: cuda if usable, else cpu), cpu, cuda or cuda:N")
    p.add_argument("--precision", type=_comma_list(_choice("machine", "fp32", "bf16", "fp16")), default="machine",
                   help="comma list of fp32, bf16, fp16 (fp16: CUDA only), or 'machine' (default): what auto picks "
                        "here plus fp32 (so bf16 is not timed where the CPU only emulates it)")
    p.add_argument("--batch", type=_comma_list(_POSITIVE), default="1,8", help="comma list of inference batch sizes")
    p.add_argument("--frames", type=_NON_NEGATIVE, default=16, help="frames of the streamed video (0 = skip streaming)")
    p.add_argument("--repeats", type=_POSITIVE, default=3, help="timed iterations per measurement (median reported)")
    p.add_argument("--train-step", action="store_true", help="also time forward + backward + AdamW")
    p.add_argument("--train-batch", type=_POSITIVE, default=2, help="batch size of the training step")
    p.add_argument("--compile", action="store_true", help="torch.compile the fast path")
    p.add_argument("--threads", type=_POSITIVE, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--sentences", type=_comma_list(_POSITIVE), default="1,4,16",
                   help="comma list of sentences per frame for the shared-trunk rows")
    p.add_argument("--no-sentences", action="store_true", help="skip the shared-trunk rows")
    p.add_argument("--sentence-batch", type=_POSITIVE, default=2, help="frames per model call in the sentence rows")
    p.add_argument("--out", help="write the results as JSON here (e.g. benchmarks/results/cpu.json)")
    p.add_argument("--quick", action="store_true", help="short smoke run: batch <= 2, 1 repeat, 4 frames")
    p.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"),
                   help="onnxruntime: also export the model and time ONNX Runtime (fp32) next to the PyTorch rows")


@command("benchmark", "measure parameters, FLOPs, frames/s, training step time and memory", _benchmark_args)
def _benchmark(args: argparse.Namespace) -> int:
    from lbdt.tools.benchmark import BenchmarkSettings, benchmark

    settings = BenchmarkSettings(
        model=args.model, size=tuple(args.size), device=args.device, batches=args.batch,
        precisions=args.precision, frames=args.frames,
        repeats=args.repeats, train_step=args.train_step, train_batch=args.train_batch, compile=args.compile,
        threads=args.threads, onnxruntime=args.backend == "onnxruntime",
        sentences=() if args.no_sentences else args.sentences, sentence_batch=args.sentence_batch)
    benchmark(settings, out=args.out, quick=args.quick)
    return 0


# ---- env (docs/performance.md)
def _env_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the report as JSON")


@command("env", "show the machine as lbdt sees it, and what --device/--precision auto pick here and why", _env_args)
def _env(args: argparse.Namespace) -> int:
    import json

    from lbdt.envreport import environment, format_environment

    env = environment()
    print(json.dumps(env, indent=2) if args.json else format_environment(env))
    return 0


# ---- export (docs/export.md)
def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("weights", help="shipped name, checkpoint path (ours or official), or https URL#sha256=HEX")
    p.add_argument("--format", dest="fmt", default="onnx", choices=("onnx",), help="output format (default onnx)")
    p.add_argument("--out", required=True, help="folder to write the graphs, lbdt_onnx.json and the word table into")


@command("export", "export a checkpoint to ONNX (text encoder + per-frame graph + manifest)", _export_args)
def _export(args: argparse.Namespace) -> int:
    from lbdt.export import export_onnx

    m = export_onnx(args.weights, args.out)
    print(f"{args.weights}: {m['graphs']['text_encoder']['file']} + {m['graphs']['frame_model']['file']} "
          f"(opset {m['opset']}, size {m['size'][0]}x{m['size'][1]}, k {m['frame_gap']}, N {m['max_words']}) "
          f"-> {args.out}/")
    return 0


# ---- predict / demo (docs/inference.md)
def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file (mp4, webm, avi, mov, ...), folder of frames, or one image")
    p.add_argument("--text", action="append", required=True, metavar="SENTENCE",
                   help="referring sentence; repeat for several objects (the video is decoded once)")
    p.add_argument("--weights", default="synthetic-tiny",
                   help="shipped name, name installed by `lbdt download` (official-lbdt4), checkpoint path (ours or "
                        "official), or https URL#sha256=HEX (default synthetic-tiny)")
    p.add_argument("--out", default="out/predict",
                   help="output folder (default out/predict). A re-run replaces the previous result in it whole "
                        "(its NN_* folders and summary.json; other files stay); the file INCOMPLETE marks a run "
                        "in progress or killed, and summary.json is written last")
    _runtime_args(p)
    p.add_argument("--batch-size", type=_POSITIVE, default=8, help="frames per model call (default 8)")
    _frame_gap_args(p, "the checkpoint's, else 6")
    _threads_arg(p)
    _word_vectors_arg(p)
    p.add_argument("--no-overlay", action="store_true", help="write masks and summary only")
    p.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"),
                   help="onnxruntime: --weights is a folder from `lbdt export --format onnx` (default torch)")


@command("predict", "segment the object a sentence refers to in every frame of a video", _predict_args)
def _predict(args: argparse.Namespace) -> int:
    from lbdt.predictor import predict_to_folder  # checks --out itself, before any work
    frame_gap = _chosen_frame_gap(args)
    _set_threads(args)
    summary = predict_to_folder(args.video, args.text, out_dir=args.out, weights=args.weights, device=args.device,
                                precision=args.precision, batch_size=args.batch_size, frame_gap=frame_gap,
                                word_vectors=args.word_vectors, overlay=not args.no_overlay, backend=args.backend)
    t = summary["timings"]
    print(f"{summary['frames']} frames x {len(args.text)} sentence(s) in {t['segment_s']:.1f} s "
          f"({t['frames_per_s']:.1f} frames/s); wrote {args.out}/")
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--seed", default=None,
                   help="clip seed (a non-negative integer), or 'random' (default: a fixed representative clip)")
    p.add_argument("--weights", default="synthetic-tiny", help="checkpoint to demo (default: the shipped one)")
    _runtime_args(p)


@command("demo", "segment a motion-dependent sentence in a synthetic clip and print its IoU", _demo_args)
def _demo(args: argparse.Namespace) -> int:
    from lbdt.demo import DEMO_SEED, run_demo

    r = run_demo(out_dir=args.out, seed=DEMO_SEED if args.seed is None else args.seed, weights=args.weights,
                 device=args.device, precision=args.precision)
    print(f'demo: "{r.sentence}" (motion-dependent), seed {r.seed}: mean IoU {r.mean_iou:.3f} over {r.frames} '
          f"frames, {r.mean_iou_full_cue:.3f} from frame {r.frame_gap} on (reference t-{r.frame_gap} exists) "
          f"({r.seconds:.1f} s, {r.precision} on {r.device})")
    print(f'  beside it: "{r.appearance_sentence}" (appearance): mean IoU {r.appearance_mean_iou:.3f}')
    if r.benchmark_motion_iou is not None:
        print(f"  for comparison: {args.weights} scores {r.benchmark_motion_iou:.3f} mean IoU on the motion sentences "
              "of the synthetic benchmark's test split; it tells a moving twin from a still one (~0.84) but not "
              "yet reliably which way it moves (~0.43)")
    print(f"wrote {r.out_dir}/clip.mp4 (the input), {r.out_dir}/overlay.mp4, {r.out_dir}/masks/, "
          f"{r.out_dir}/strip.png, {r.out_dir}/summary.json")
    return 0


# ---- serve (docs/serve.md)
def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default="synthetic-tiny",
                   help="shipped name, checkpoint path (ours or official), or https URL#sha256=HEX (default synthetic-tiny)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_int_at_least(1, 65535), default=7860, help="port (default 7860)")
    _runtime_args(p)
    p.add_argument("--max-upload-mb", type=_float_in(0.001, 1e6), default=50.0, help="largest accepted upload in MB (default 50)")
    p.add_argument("--max-seconds", type=_float_in(0.001, 1e6), default=60.0, help="longest accepted video in seconds (default 60)")
    p.add_argument("--max-frames", type=_int_at_least(1), default=1800, help="most frames decoded per video (default 1800)")
    p.add_argument("--max-frame-pixels", type=_int_at_least(1), default=3840 * 2160,
                   help="largest frame, width x height, checked before decoding (default 8294400: 4K UHD)")
    p.add_argument("--max-sentences", type=_int_at_least(1), default=8, help="sentences per request (default 8)")
    p.add_argument("--max-queue", type=_int_at_least(1), default=16,
                   help="requests waiting behind the running one; more are refused (default 16)")


@command("serve", "a local web page: upload a video, type sentences, get overlay video, masks and plots", _serve_args)
def _serve(args: argparse.Namespace) -> int:
    from lbdt.tools.serve import Limits, serve

    limits = Limits(max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds, max_frames=args.max_frames,
                    max_frame_pixels=args.max_frame_pixels, max_sentences=args.max_sentences,
                    max_queue=args.max_queue)
    serve(args.weights, host=args.host, port=args.port, device=args.device, precision=args.precision, limits=limits)
    return 0
class _Parser(argparse.ArgumentParser):
    """An argument error is one line, like every other error: `lbdt <command>: error: <problem>`, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lbdt", description="Referring video object segmentation with LBDT.")
    parser.add_argument("--version", action="version", version=f"lbdt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add, run) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(_run=run)
    return parser


def _unknown_hint(parser: argparse.ArgumentParser, command: str | None, unknown: list[str]) -> str:
    """What the unrecognised options probably meant: a configuration field (train / show-config take
    SECTION.FIELD=VALUE, e.g. `--lr 1e-4` -> `train.lr=1e-4`) or a close option of the subcommand."""
    import difflib
    from dataclasses import fields

    flags = [(i, t) for i, t in enumerate(unknown) if t.startswith("--")]
    if not flags:
        return ""
    hints = []
    if command in ("train", "show-config"):
        from lbdt.config import RunConfig

        defaults = RunConfig()
        sections = {f.name: [g.name for g in fields(getattr(defaults, f.name))] for f in fields(RunConfig)}
        dotted = {f"{sec}.{name}": name for sec, names in sections.items() for name in names}
        for i, token in flags:
            name, _, value = token[2:].partition("=")
            if not value and i + 1 < len(unknown) and not unknown[i + 1].startswith("--"):
                value = unknown[i + 1]
            key = name.replace("-", "_")
            exact = [d for d, n in dotted.items() if n == key or d == key]
            close = exact or difflib.get_close_matches(key, list(dotted.values()), n=1, cutoff=0.75)
            if close and not exact:
                close = [d for d, n in dotted.items() if n == close[0]]
            if close:
                hints.append(f"{token} -> {close[0]}={value or 'VALUE'}")
        if hints:
            return f" (configuration fields are set as SECTION.FIELD=VALUE: {'; '.join(hints)})"
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    options = [o for a in sub.choices[command]._actions for o in a.option_strings if o.startswith("--")] \
        if sub is not None and command in sub.choices else []
    for _, token in flags:
        match = difflib.get_close_matches(token.partition("=")[0], options, n=1, cutoff=0.6)
        if match:
            hints.append(f"{token.partition('=')[0]} -> {match[0]}")
    return f" (did you mean: {'; '.join(hints)}?)" if hints else ""


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return code
    except BrokenPipeError:  # the reader of stdout went away (`lbdt download --list | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        os.close(devnull)
        return 141  # 128 + SIGPIPE, as a shell reports a command stopped by a closed pipe


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}{_unknown_hint(parser, args.command, unknown)}")
    if not hasattr(args, "_run"):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (LBDTError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
        if os.environ.get("LBDT_DEBUG"):
            raise
        print(f"lbdt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lbdt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
