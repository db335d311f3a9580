"""`LBDT.segment_many`: several sentences over the same frames, the sentence-independent trunk computed once.

fp32 results must equal S separate `segment` calls (max |delta| <= 1e-5, masks identical), for text batch 1
and B, S = 1 and 3, chunked and not, on the plain and the prepared (`engine.fast`) model.
"""

from __future__ import annotations

import copy

import pytest
import torch

from lbdt.engine.fast import prepare_for_inference, to_input
from lbdt.errors import LBDTError
from lbdt.models.build import build_model

B = 2
SIZE = (64, 96)


def _inputs(model, *, text_batches: tuple[int, ...], seed: int = 0):
    """Frames [B,3,H,W], their references and one TextFeatures per entry of `text_batches` (batch 1 or B),
    each sentence with its own length."""
    gen = torch.Generator().manual_seed(seed)
    frame = torch.randn(B, 3, *SIZE, generator=gen)
    ref = frame + 0.3 * torch.randn(B, 3, *SIZE, generator=gen)
    texts = []
    for s, n in enumerate(text_batches):
        words = torch.randn(n, 6, model.word_dim, generator=gen)
        mask = torch.ones(n, 6)
        mask[:, 2 + s % 4:] = 0
        with torch.inference_mode():
            texts.append(model.encode_text(words, mask))
    return frame, ref, texts


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    for m in model.modules():  # BatchNorm statistics that are not the identity, so folding matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    with torch.no_grad():  # logits of order 1 (a fresh head gives ~0.01), so 1e-5 and the masks mean something
        model.head.tower[-1].weight.mul_(300.0)
    return model


def _check_equal(many: torch.Tensor, separate: torch.Tensor) -> None:
    assert many.shape == separate.shape
    assert (many - separate).abs().max().item() <= 1e-5
    assert torch.equal(many > 0, separate > 0)


TEXT_BATCHES = {"S=1 batch B": (B,), "S=1 batch 1": (1,), "S=3 batch B": (B, B, B), "S=3 batch 1": (1, 1, 1),
                "S=3 mixed": (B, 1, B)}


@pytest.mark.parametrize("text_batches", list(TEXT_BATCHES.values()), ids=list(TEXT_BATCHES))
@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_equals_separate_segment_calls(tiny, text_batches, chunk):
    frame, ref, texts = _inputs(tiny, text_batches=text_batches)
    with torch.inference_mode():
        separate = torch.stack([tiny.segment(frame, ref, t) for t in texts])  # [S,B,H,W]
        many = tiny.segment_many(frame, ref, texts, chunk=chunk)
    _check_equal(many, separate)
    assert separate[0].std() > 0.5  # real logits, not a constant
    if len(texts) > 1:  # different sentences give different logits: the sentences are not mixed up
        assert (separate[0] - separate[1]).abs().max() > 1e-3


def test_equals_forward_for_each_sentence(tiny):
    gen = torch.Generator().manual_seed(3)
    frame, ref, _ = _inputs(tiny, text_batches=())
    words = [torch.randn(B, 5, tiny.word_dim, generator=gen) for _ in range(3)]
    mask = torch.ones(B, 5)
    with torch.inference_mode():
        texts = [tiny.encode_text(w, mask) for w in words]
        many = tiny.segment_many(frame, ref, texts, chunk=3)
        for s, w in enumerate(words):
            _check_equal(many[s], tiny(frame, ref, w, mask))


def test_after_prepare_for_inference(tiny):
    model = copy.deepcopy(tiny)
    prepare_for_inference(model, device="cpu", precision="fp32")
    frame, ref, texts = _inputs(model, text_batches=(B, 1, B), seed=1)
    frame, ref = to_input(frame, device="cpu"), to_input(ref, device="cpu")
    with torch.inference_mode():
        separate = torch.stack([model.segment(frame, ref, t) for t in texts])
        for chunk in (1, 4):
            _check_equal(model.segment_many(frame, ref, texts, chunk=chunk), separate)
        plain = torch.stack([tiny.segment(frame.contiguous(), ref.contiguous(), t) for t in texts])
    assert (separate - plain).abs().max() <= 1e-4  # folding + channels-last change rounding only


def test_trunk_runs_once_and_the_rest_once_per_chunk(tiny):
    calls = {"layer1": 0, "layer3": 0, "layer4": 0}
    hooks = [getattr(tiny.spatial_backbone, name).register_forward_hook(
        lambda *_, name=name: calls.__setitem__(name, calls[name] + 1)) for name in calls]
    frame, ref, texts = _inputs(tiny, text_batches=(1,) * 5)
    try:
        with torch.inference_mode():
            tiny.segment_many(frame, ref, texts, chunk=2)
    finally:
        for h in hooks:
            h.remove()
    assert calls == {"layer1": 1, "layer3": 1, "layer4": 3}  # 5 sentences in chunks of 2, 2, 1


def test_bad_input_is_a_clear_error(tiny):
    frame, ref, texts = _inputs(tiny, text_batches=(B, 3))
    with pytest.raises(LBDTError, match="non-empty sequence"):
        tiny.segment_many(frame, ref, [])
    with pytest.raises(LBDTError, match="non-empty sequence"):
        tiny.segment_many(frame, ref, texts[0])  # one TextFeatures, not a sequence
    with pytest.raises(LBDTError, match="chunk must be >= 1"):
        tiny.segment_many(frame, ref, texts[:1], chunk=0)
    with pytest.raises(LBDTError, match="batch 3 but frames have batch 2"):
        tiny.segment_many(frame, ref, texts)
    with pytest.raises(LBDTError, match="ref_frame shape"):
        tiny.segment_many(frame, ref[:1], texts[:1])


@pytest.mark.slow
def test_lbdt4_equals_separate_segment_calls():
    torch.manual_seed(0)
    model = build_model("lbdt4").eval()
    frame, ref, texts = _inputs(model, text_batches=(B, 1, B), seed=2)
    with torch.inference_mode():
        separate = torch.stack([model.segment(frame, ref, t) for t in texts])
        _check_equal(model.segment_many(frame, ref, texts), separate)
        _check_equal(model.segment_many(frame, ref, texts, chunk=2), separate)


@pytest.mark.slow
def test_compiled_segment_many_equals_separate_calls(tiny):
    model = copy.deepcopy(tiny)
    prepare_for_inference(model, device="cpu", precision="fp32", compile=True)
    frame, ref, texts = _inputs(model, text_batches=(B, 1, B), seed=4)
    frame, ref = to_input(frame, device="cpu"), to_input(ref, device="cpu")
    with torch.inference_mode():
        separate = torch.stack([model.segment(frame, ref, t) for t in texts])
        _check_equal(model.segment_many(frame, ref, texts, chunk=4), separate)


# ---------------------------------------------------------------- lbdt benchmark: sentences per frame


def test_sentence_ratios_hand_computed():
    from lbdt.tools.benchmark import sentence_ratios

    rows = [{"path": path, "precision": p, "sentences": e, "frame_sentences_per_s_best": v}
            for path, p, e, v in [("shared", "fp32", 1, 3.0), ("separate", "fp32", 1, 3.0), ("plain", "fp32", 1, 2.5),
                                  ("shared", "fp32", 4, 4.0), ("separate", "fp32", 4, 2.0), ("plain", "fp32", 4, 2.5),
                                  ("shared", "bf16", 4, 9.0), ("separate", "bf16", 4, 6.0)]]
    assert sentence_ratios(rows) == {"shared_vs_separate_fp32": {"1": 1.0, "4": 2.0},
                                     "default_vs_plain_fp32": {"1": 1.2, "4": 1.6},
                                     "shared_vs_separate_bf16": {"4": 1.5}}


def test_benchmark_sentence_rows(tmp_path):
    from lbdt.cli import main
    from lbdt.tools.benchmark import BenchmarkSettings, format_table, run_benchmark

    settings = BenchmarkSettings(model="tiny", size=(64, 64), precisions=("fp32", "bf16"), batches=(1,), frames=0,
                                 repeats=1, matmul_sizes=(256,), loader_samples=0, sentences=(1, 3),
                                 sentence_batch=2)
    result = run_benchmark(settings)
    rows = result["sentences"]
    assert {(r["path"], r["precision"], r["sentences"]) for r in rows} == {
        (path, p, e) for e in (1, 3) for path, p in
        [("shared", "fp32"), ("separate", "fp32"), ("plain", "fp32"), ("shared", "bf16"), ("separate", "bf16")]}
    for r in rows:
        assert r["batch"] == 2
        assert r["frame_sentences_per_s"] == pytest.approx(2 * r["sentences"] / r["median_seconds_per_call"])
        assert r["frame_sentences_per_s_best"] == pytest.approx(2 * r["sentences"] / min(r["seconds_per_call"]))
    rate = {(r["path"], r["precision"], r["sentences"]): r["frame_sentences_per_s_best"] for r in rows}
    assert result["sentence_ratios"]["default_vs_plain_fp32"]["3"] == pytest.approx(
        rate[("shared", "fp32", 3)] / rate[("plain", "fp32", 3)])
    assert result["effective_precision"]["fp32"] == "fp32"
    assert result["effective_precision"]["bf16"].startswith("bf16")
    table = format_table(result)
    assert "default_vs_plain_fp32 (fastest rounds): E=1" in table and table.count("\nshared ") == 4
    out = tmp_path / "b.json"  # the CLI spelling
    assert main(["benchmark", "--model", "tiny", "--size", "64", "64", "--precision", "fp32", "--batch", "1",
                 "--frames", "0", "--repeats", "1", "--sentences", "2", "--sentence-batch", "1", "--quick",
                 "--out", str(out)]) == 0
    import json

    saved = json.loads(out.read_text())
    assert {(r["path"], r["sentences"], r["batch"]) for r in saved["sentences"]} == {
        ("shared", 2, 1), ("separate", 2, 1), ("plain", 2, 1)}


def test_segment_shared_equals_segment_on_the_indexed_frames(tiny):
    gen = torch.Generator().manual_seed(3)
    frames, refs = torch.randn(2, 3, 64, 96, generator=gen), torch.randn(2, 3, 64, 96, generator=gen)
    words, mask = torch.randn(5, 7, 300, generator=gen) / 17, torch.ones(5, 7)
    index = torch.tensor([0, 0, 1, 0, 1])
    with torch.inference_mode():
        text = tiny.encode_text(words, mask)
        shared = tiny.segment_shared(frames, refs, text, index)
        plain = tiny.segment(frames[index], refs[index], text)
    _check_equal(shared, plain)
    with pytest.raises(LBDTError, match="index must be \\[B\\] with B = 5"):
        tiny.segment_shared(frames, refs, text, index[:3])


def test_evaluation_batches_compute_the_trunk_once_per_distinct_frame(tiny):
    """engine.inference.predict groups the samples of one annotated frame (several sentences) of a batch."""
    from lbdt.engine.inference import predict
    from lbdt.types import Batch, SampleMeta

    gen = torch.Generator().manual_seed(4)
    frame_a, frame_b = torch.randn(3, 64, 96, generator=gen), torch.randn(3, 64, 96, generator=gen)
    ref = torch.randn(3, 64, 96, generator=gen)
    frames = torch.stack([frame_a, frame_a, frame_b, frame_a])
    metas = [SampleMeta(dataset="a2d", video_id="v", object_id=str(i), frame_id="f" + "aaba"[i], ref_frame_id="r",
                        sentence=f"s{i}", original_size=(64, 96)) for i in range(4)]
    words, mask = torch.randn(4, 7, 300, generator=gen) / 17, torch.ones(4, 7)
    batch = Batch(frames=frames, ref_frames=ref.expand(4, -1, -1, -1).clone(), word_vectors=words, word_mask=mask,
                  metas=metas)
    calls = {"n": 0}
    hook = tiny.spatial_backbone.layer3.register_forward_hook(
        lambda _m, inputs, _o: calls.__setitem__("n", calls["n"] + inputs[0].shape[0]))
    try:
        with torch.inference_mode():
            got = [p.prob for p, _ in predict(tiny, [batch], protocol="native", keep_prob=True)]
    finally:
        hook.remove()
    assert calls["n"] == 2  # two distinct frames, not four samples
    with torch.inference_mode():
        want = torch.sigmoid(tiny(batch.frames, batch.ref_frames, words, mask))
    for g, w in zip(got, want):
        assert abs(torch.from_numpy(g) - w).max().item() <= 1e-5
