"""Checks that need a CUDA device (marker `gpu`; skipped with a clear reason elsewhere, see conftest.py),
run in one go by `benchmarks/gpu_check.sh OUTDIR`, and the script's own argument handling (CPU).

On the GPU: CUDA fp32 logits equal the CPU's within 1e-3 relative; bf16 / fp16 masks have IoU >= 0.99 with
fp32; training steps in bf16 and in fp16 (grad scaler) through `lbdt train`; DDP over nccl at world size 1
gives the plain model's gradients; streaming `VideoSegmenter`; `segment_many`.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import test_fast
from lbdt.data.synth import make_clip
from lbdt.engine import fast
from lbdt.models.build import build_model
from lbdt.runtime import autocast

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
CUDA = torch.device("cuda", 0)
FRAMES, OBJECT, SIZE = test_fast.FRAMES, test_fast.OBJECT, test_fast.SIZE
trained = test_fast.trained  # the fixture: the tiny model trained on a synthetic clip (its mask follows the object)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


@pytest.mark.gpu
def test_cuda_fp32_logits_match_cpu():
    torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 (cuDNN would otherwise use TF32 convolutions)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    model = build_model("lbdt4").eval()
    gen = torch.Generator().manual_seed(0)
    frame = torch.randn(2, 3, 320, 320, generator=gen)
    ref = frame + 0.3 * torch.randn(2, 3, 320, 320, generator=gen)
    words, mask = torch.randn(2, 25, 300, generator=gen) / 17, torch.ones(2, 25)
    mask[:, 8:] = 0
    with torch.inference_mode():
        cpu = model(frame, ref, words, mask)
        gpu = model.to(CUDA)(frame.to(CUDA), ref.to(CUDA), words.to(CUDA), mask.to(CUDA)).cpu()
    assert float((gpu - cpu).abs().max()) <= 1e-3 * float(cpu.abs().max())


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_masks_agree_with_fp32(trained, precision):
    model, frames, refs, vectors, mask, _ = trained
    out = {}
    for p in ("fp32", precision):
        prepared = copy.deepcopy(model)
        fast.prepare_for_inference(prepared, device=CUDA, precision=p)
        with torch.inference_mode(), autocast(CUDA, p):
            text = prepared.encode_text(vectors[:1].to(CUDA), mask[:1].to(CUDA))
            out[p] = prepared.segment(fast.to_input(frames, device=CUDA), fast.to_input(refs, device=CUDA),
                                      text).float().cpu()
    assert float((out[precision] - out["fp32"]).abs().max()) > 1e-4  # reduced precision really ran
    assert _iou(out[precision] > 0, out["fp32"] > 0) >= 0.99


def _train(tmp_path: Path, precision: str) -> dict:
    from lbdt.engine.checkpointing import load_checkpoint

    from lbdt.cli import main
    from lbdt.data.synth import write_benchmark

    root = tmp_path / "bench"
    if not root.exists():
        write_benchmark(root, fmt="a2d", seed=5, videos=(2, 1, 1), annotated=3, progress=False)
    out = tmp_path / f"run-{precision}"
    assert main(["train", "synthetic_tiny", f"data.root={root}", f"train.output_dir={out}", "data.size=[64,64]",
                 "data.num_workers=0", "train.batch_size=4", "train.max_steps=3", "data.val_split=",
                 "train.device=cuda", f"train.precision={precision}"]) == 0
    return load_checkpoint(out / "last.pt")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_training_steps_in_reduced_precision(tmp_path, precision):
    saved = _train(tmp_path, precision)
    assert saved["step"] == 3
    init = build_model("tiny").state_dict()
    weights = saved["model"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    moved = sum(not torch.equal(weights[k].cpu(), init[k]) for k in init if init[k].is_floating_point())
    assert moved > len(init) // 3  # the steps updated the network (fp16: the grad scaler let them through)


@pytest.mark.gpu
def test_ddp_nccl_world_size_one_gives_the_plain_gradients(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from lbdt.losses import segmentation_loss

    torch.manual_seed(0)
    model = build_model("tiny", dropout=0.0).to(CUDA)
    plain = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    frame = torch.randn(2, 3, 64, 64, generator=gen).to(CUDA)
    words, mask = (torch.randn(2, 6, 300, generator=gen) / 17).to(CUDA), torch.ones(2, 6, device=CUDA)
    target = (frame[:, 0] > 0).float()
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'rdzv'}", rank=0, world_size=1)
    try:
        net = DistributedDataParallel(model, device_ids=[0])
        segmentation_loss(net(frame, frame.flip(0), words, mask), target)["loss"].backward()
        box = [None]
        dist.gather_object({"rank": dist.get_rank()}, box, dst=0)  # what distributed.gather uses
        assert box == [{"rank": 0}]
    finally:
        dist.destroy_process_group()
    segmentation_loss(plain(frame, frame.flip(0), words, mask), target)["loss"].backward()
    for (name, a), b in zip(model.named_parameters(), plain.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.gpu
def test_streaming_video_segmenter_on_cuda(trained):
    from lbdt.data.synth import vocabulary
    from lbdt.predictor import VideoSegmenter
    from lbdt.words import WordVectors

    model = trained[0]
    clip = make_clip(0, frames=FRAMES, size=SIZE)  # the clip the model was trained on, as uint8 frames
    sentence = clip.objects[OBJECT].sentence
    table = WordVectors.seeded(vocabulary())
    masks = {}
    for device in ("cpu", "cuda"):
        seg = VideoSegmenter(copy.deepcopy(model), device=device, precision="fp32", size=clip.frames.shape[1:3],
                             frame_gap=1,
                             batch_size=3, word_vectors=table)
        masks[device] = np.stack([p.mask for p in seg.segment(clip.frames, sentence)])
    assert masks["cuda"].shape == masks["cpu"].shape == clip.masks[OBJECT].shape
    inter, union = (masks["cuda"] & masks["cpu"]).sum(), (masks["cuda"] | masks["cpu"]).sum()
    assert union > 0 and inter / union >= 0.99


@pytest.mark.gpu
def test_segment_many_on_cuda_equals_separate_calls(trained):
    model, frames, refs, vectors, mask, _ = trained
    prepared = copy.deepcopy(model)
    fast.prepare_for_inference(prepared, device=CUDA)
    f, r = fast.to_input(frames, device=CUDA), fast.to_input(refs, device=CUDA)
    with torch.inference_mode():
        texts = [prepared.encode_text(vectors[:1].roll(j, dims=-1).to(CUDA), mask[:1].to(CUDA)) for j in range(5)]
        separate = torch.stack([prepared.segment(f, r, t) for t in texts])
        many = prepared.segment_many(f, r, texts, chunk=2)
    assert float((many - separate).abs().max()) <= 1e-4 * float(separate.abs().max())
    assert _iou(many > 0, separate > 0) >= 0.999


# ---------------------------------------------------------------- CPU: the script's argument handling, the skip


@pytest.mark.parametrize("args", [[], ["a", "b"], ["--help"]], ids=["no argument", "two arguments", "an option"])
def test_gpu_check_script_usage(args):
    r = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2
    assert r.stderr.startswith("usage: benchmarks/gpu_check.sh OUTDIR")
    assert r.stdout == ""


def test_gpu_check_script_rejects_a_file_as_outdir(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    r = subprocess.run(["bash", str(SCRIPT), str(target)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "is not a folder" in r.stderr and "usage:" in r.stderr
    assert target.read_text() == "keep me"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip on a machine without CUDA")
def test_gpu_tests_skip_with_a_clear_reason():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-m", "gpu", "-p", "no:cacheprovider",
                        str(Path(__file__)), "-k", "fp32_logits or ddp"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT, env=env, check=False)
    assert r.returncode == 0, r.stdout[-2000:]
    assert "2 skipped" in r.stdout
    assert r.stdout.count("needs a CUDA device: torch.cuda.is_available() is False here") == 2
