"""The `lbdt` command. Each subcommand parses its arguments and calls one library function.

Subcommands register themselves in `_COMMANDS` with `@command(name, help, _<name>_args)`; imports of
heavy modules happen inside the handlers so `lbdt --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

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


# ---------------------------------------------------------------- subcommands
# (each block: `def _<name>_args(p)` adding options, then `@command(name, help, _<name>_args)` on the runner)


# ---- train / show-config (docs/training.md)
def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("preset", help="preset name (a2d_lbdt4, a2d_lbdt1, ytvos_lbdt4, synthetic_tiny) or a YAML file")
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


@command("train", "train LBDT (one process, or DDP under torchrun)", _train_args)
def _train(args: argparse.Namespace) -> int:
    from lbdt.config import load_config
    from lbdt.engine.train import train

    result = train(load_config(args.preset, args.overrides), resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        best = result["best"]
        print(f"done: step {result['step']}, epoch {result['epoch']}, output in {result['output_dir']}"
              + (f"; best {best['metric']} {best['value']:.4f} at epoch {best['epoch']}" if best else ""))
    return 0


# ---- info / convert-official (docs/model.md)
def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="variant name: lbdt4, lbdt1, lbdt4_r101 or tiny")
    p.add_argument("--size", nargs=2, type=int, default=(320, 320), metavar=("H", "W"),
                   help="input size for the MAC count (default 320 320)")
    p.add_argument("--words", type=int, default=25, help="sentence length N for the MAC count (default 25)")


@command("info", "print a model variant's parameter count and GMACs per frame", _info_args)
def _info(args: argparse.Namespace) -> int:
    from lbdt.models.complexity import model_summary

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
    from lbdt.models.checkpoint import convert_official_checkpoint

    variant = convert_official_checkpoint(args.src, args.dst)
    print(f"{args.src}: {variant} -> {args.dst}")
    return 0


# ---- prepare-data (docs/datasets/*.md, "Preparing from the official release")
def _prepare_data_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    helps = {"a2d": "A2D-Sentences (clips320H mp4s, videoset.csv, text_annotations/)",
             "jhmdb": "J-HMDB-Sentences (Rename_Images/, puppet_mask/, jhmdb_annotation.txt)",
             "ytvos": "Ref-YouTube-VOS (meta_expressions/, train/, valid/)"}
    for name, text in helps.items():
        d = sub.add_parser(name, help=text, description=text)
        d.add_argument("--raw", required=True, help="folder holding the official download(s), unpacked")
        d.add_argument("--out", help=f"dataset root to build (default datasets/{name})")
        d.add_argument("--copy", action="store_true", help="copy files instead of hard-linking them")
        d.add_argument("--no-progress", action="store_true", help="no progress bars")
        if name == "a2d":
            d.add_argument("--jpeg-quality", type=int, default=95, help="quality of the extracted JPEG frames")
        if name == "jhmdb":
            d.add_argument("--seed", type=int, default=0, help="seed of the per-video frame choice")
            d.add_argument("--frames-per-video", type=int, default=3, help="evaluated frames per video")
        if name == "ytvos":
            d.add_argument("--val-fraction", type=float, default=0.05, help="share of train videos held out as val/")
            d.add_argument("--seed", type=int, default=0, help="seed of the held-out video choice")
            d.add_argument("--drop-absent", action="store_true",
                           help="leave out frames where the referred object is not annotated (needs train/meta.json)")


@command("prepare-data", "build a dataset's layout and list files from its official release", _prepare_data_args)
def _prepare_data(args: argparse.Namespace) -> int:
    from lbdt.data.prepare import prepare_dataset

    options = {k: getattr(args, k) for k in ("jpeg_quality", "seed", "frames_per_video", "val_fraction",
                                             "drop_absent") if hasattr(args, k)}
    summary = prepare_dataset(args.dataset, args.raw, args.out or f"datasets/{args.dataset}", copy=args.copy,
                              show_progress=not args.no_progress, **options)
    print(summary.format())
    return 0


# ---- evaluate (docs/evaluation.md)
def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="our checkpoint (.pt), an official LBDT checkpoint, a shipped name or a URL")
    p.add_argument("--dataset", required=True, choices=("a2d", "jhmdb", "ytvos"), help="on-disk format of --root")
    p.add_argument("--root", required=True, help="dataset root (see docs/datasets/)")
    p.add_argument("--split", required=True, help="list to evaluate, e.g. val (A2D test list), test, valid (Ref-YTVOS)")
    p.add_argument("--protocol", choices=("lbdt", "native"),
                   help="resize rule (docs/evaluation.md); default lbdt for a2d/jhmdb, native for ytvos")
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per forward pass (none is ever dropped)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="autocast precision")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--word-vectors", help="GloVe-format file when the checkpoint holds no word-vector table")
    p.add_argument("--out", help="folder for metrics.json, masks/ and (Ref-YTVOS valid) submission.zip")
    p.add_argument("--save-masks", action="store_true", help="also write every mask as a 0/255 PNG under OUT/masks/")
    p.add_argument("--no-coco", action="store_true", help="skip COCO mask mAP")
    p.add_argument("--strict-precision", action="store_true", help="P@K counts IoU > K (MTTR) instead of >= K (LBDT)")
    p.add_argument("--jf", action=argparse.BooleanOptionalAction, default=None,
                   help="DAVIS J&F per expression (default: on for ytvos)")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="model input size (default: the checkpoint's)")
    p.add_argument("--frame-gap", type=int, help="reference frame t-k (default: the dataset's k)")
    p.add_argument("--limit", type=int, help="only the first N samples (smoke test)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("evaluate", "evaluate a model on a dataset split: every metric, masks, submission zip", _evaluate_args)
def _evaluate(args: argparse.Namespace) -> int:
    import torch.distributed

    from lbdt.engine.evaluate import evaluate, format_report

    report = evaluate(
        args.checkpoint, dataset=args.dataset, root=args.root, split=args.split, protocol=args.protocol,
        threshold=args.threshold, batch_size=args.batch_size, device=args.device, precision=args.precision,
        num_workers=args.workers, word_vectors=args.word_vectors, output_dir=args.out, save_masks=args.save_masks,
        coco=not args.no_coco, strict_precision=args.strict_precision, jf=args.jf,
        size=tuple(args.size) if args.size else None, frame_gap=args.frame_gap, limit=args.limit,
        progress=not args.no_progress,
    )
    if torch.distributed.is_initialized():  # started by torchrun: every rank returned rank 0's report
        torch.distributed.destroy_process_group()
    if os.environ.get("RANK", "0") == "0":
        print(format_report(report))
    return 0


# ---- validate-submission (docs/evaluation.md)
def _validate_submission_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("zip", metavar="ZIP", help="submission zip (Annotations/<video>/<exp_id>/<frame>.png)")
    p.add_argument("--meta", required=True, help="meta_expressions/valid/meta_expressions.json")
    p.add_argument("--test-meta", help="meta_expressions/test/meta_expressions.json: its videos are not expected")
    p.add_argument("--images", help="valid/JPEGImages folder: also check every PNG against its frame's size")


@command("validate-submission", "check a Ref-YouTube-VOS submission zip: missing, extra and malformed files",
         _validate_submission_args)
def _validate_submission(args: argparse.Namespace) -> int:
    from lbdt.evaluation.submission import validate_submission

    problems = validate_submission(args.zip, args.meta, args.test_meta, images_root=args.images)
    for problem in problems:
        print(problem)
    print(f"{args.zip}: {len(problems)} problem(s)" if problems else f"{args.zip}: OK")
    return 1 if problems else 0


# ---- synth (docs/datasets/synthetic.md)
def _synth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", dest="fmt", choices=("a2d", "jhmdb", "ytvos"), default="a2d",
                   help="on-disk format to write (default a2d)")
    p.add_argument("--out", required=True, help="folder to create (must not exist, or be empty)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes identical files")
    p.add_argument("--videos", nargs=3, type=int, default=(360, 60, 90), metavar=("TRAIN", "VAL", "TEST"),
                   help="videos per split (default 360 60 90)")
    p.add_argument("--frames", type=int, default=14, help="frames per video (default 14)")
    p.add_argument("--size", nargs=2, type=int, default=(96, 128), metavar=("H", "W"),
                   help="frame size (default 96 128)")
    p.add_argument("--annotated", type=int, default=1, help="annotated frames per video (default 1)")
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
    p.add_argument("--size", type=int, nargs=2, default=(320, 320), metavar=("H", "W"), help="input size")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", default="fp32,bf16,fp16", help="comma list of fp32, bf16, fp16 (fp16: CUDA only)")
    p.add_argument("--batch", default="1,8", help="comma list of inference batch sizes")
    p.add_argument("--frames", type=int, default=16, help="frames of the streamed video (0 = skip streaming)")
    p.add_argument("--repeats", type=int, default=3, help="timed iterations per measurement (median reported)")
    p.add_argument("--train-step", action="store_true", help="also time forward + backward + AdamW")
    p.add_argument("--train-batch", type=int, default=2, help="batch size of the training step")
    p.add_argument("--compile", action="store_true", help="torch.compile the fast path")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--sentences", default="1,4,16",
                   help="comma list of sentences per frame for the shared-trunk rows ('' = skip)")
    p.add_argument("--sentence-batch", type=int, default=2, help="frames per model call in the sentence rows")
    p.add_argument("--out", help="write the results as JSON here (e.g. benchmarks/results/cpu.json)")
    p.add_argument("--quick", action="store_true", help="short smoke run: batch <= 2, 1 repeat, 4 frames")


@command("benchmark", "measure parameters, FLOPs, frames/s, training step time and memory", _benchmark_args)
def _benchmark(args: argparse.Namespace) -> int:
    from lbdt.benchmark import BenchmarkSettings, benchmark

    try:
        batches = tuple(int(b) for b in args.batch.split(","))
    except ValueError:
        raise LBDTError(f"--batch must be a comma list of integers, got {args.batch!r}") from None
    try:
        sentences = tuple(int(e) for e in args.sentences.split(",") if e.strip())
    except ValueError:
        raise LBDTError(f"--sentences must be a comma list of integers, got {args.sentences!r}") from None
    settings = BenchmarkSettings(
        model=args.model, size=tuple(args.size), device=args.device, batches=batches,
        precisions=tuple(p.strip() for p in args.precision.split(",") if p.strip()), frames=args.frames,
        repeats=args.repeats, train_step=args.train_step, train_batch=args.train_batch, compile=args.compile,
        threads=args.threads, sentences=sentences, sentence_batch=args.sentence_batch)
    benchmark(settings, out=args.out, quick=args.quick)
    return 0


# ---- predict / demo (docs/inference.md)
def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file (mp4, webm, avi, mov, ...), folder of frames, or one image")
    p.add_argument("--text", action="append", required=True, metavar="SENTENCE",
                   help="referring sentence; repeat for several objects (the video is decoded once)")
    p.add_argument("--weights", default="synthetic-tiny",
                   help="shipped name, checkpoint path (ours or official), or https URL#sha256=HEX (default synthetic-tiny)")
    p.add_argument("--out", default="out/predict", help="output folder (default out/predict)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"), help="fp16: CUDA only")
    p.add_argument("--batch-size", type=int, default=8, help="frames per model call (default 8)")
    p.add_argument("--frame-gap", type=int, help="k: reference frame t-k (default: the checkpoint's, else 6)")
    p.add_argument("--glove", metavar="PATH", help="GloVe text file, for checkpoints without their own word vectors")
    p.add_argument("--no-overlay", action="store_true", help="write masks and summary only")


@command("predict", "segment the object a sentence refers to in every frame of a video", _predict_args)
def _predict(args: argparse.Namespace) -> int:
    from lbdt.predictor import predict_to_folder

    summary = predict_to_folder(args.video, args.text, out_dir=args.out, weights=args.weights, device=args.device,
                                precision=args.precision, batch_size=args.batch_size, frame_gap=args.frame_gap,
                                glove=args.glove, overlay=not args.no_overlay)
    t = summary["timings"]
    print(f"{summary['frames']} frames x {len(args.text)} sentence(s) in {t['segment_s']:.1f} s "
          f"({t['frames_per_s']:.1f} frames/s); wrote {args.out}/")
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--seed", type=int, help="clip seed (default: a fresh random one, printed)")
    p.add_argument("--weights", default="synthetic-tiny", help="checkpoint to demo (default: the shipped one)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")


@command("demo", "segment a motion-dependent sentence in a fresh synthetic clip and print its IoU", _demo_args)
def _demo(args: argparse.Namespace) -> int:
    from lbdt.demo import run_demo

    r = run_demo(out_dir=args.out, seed=args.seed, weights=args.weights, device=args.device)
    print(f'demo: "{r.sentence}" (motion-dependent), seed {r.seed}: mean IoU {r.mean_iou:.3f} over {r.frames} '
          f"frames, {r.mean_iou_full_cue:.3f} from frame {r.frame_gap} on (reference t-{r.frame_gap} exists) "
          f"({r.seconds:.1f} s)")
    print(f"wrote {r.out_dir}/overlay.mp4, {r.out_dir}/masks/, {r.out_dir}/strip.png, {r.out_dir}/summary.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lbdt", description="Referring video object segmentation with LBDT.")
    parser.add_argument("--version", action="version", version=f"lbdt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add, run) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
