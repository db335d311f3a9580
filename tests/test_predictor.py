"""VideoSegmenter: equivalence with direct per-frame model calls, streaming in flat memory, inputs, errors."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from lbdt.data.transforms import normalize, resize_image
from lbdt.engine.inference import resize_bilinear
from lbdt.errors import LBDTError
from lbdt.models.build import build_model
from lbdt.predictor import VideoSegmenter
from lbdt.words import WordVectors

SENTENCE = "the red circle moving left"
VOCAB = ["the", "red", "blue", "circle", "square", "moving", "left", "right"]


def responsive_tiny():
    """A random `tiny` model whose BatchNorm statistics are shrunk (running_var 0.3) so that its logits spread
    over a few units and respond to the frames, the reference frame and the words (fresh init barely does)."""
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(0.3)
    return model


@pytest.fixture(scope="module")
def model():
    return responsive_tiny()


@pytest.fixture(scope="module")
def table():
    return WordVectors.seeded(VOCAB, seed=1)


def random_frames(n, h=49, w=71, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def direct_probs(model, table, frames, sentence, k, size):
    """Reference: one plain `model(...)` call per frame with reference max(t - k, 0), no batching, no streaming."""
    vectors, mask = table.encode(sentence)
    out = []
    with torch.inference_mode():
        for t, frame in enumerate(frames):
            x = normalize(resize_image(frame, size))[None]
            r = normalize(resize_image(frames[max(t - k, 0)], size))[None]
            logits = model(x, r, vectors[None], mask[None])[0]
            out.append(resize_bilinear(logits.sigmoid(), frame.shape[:2]))
    return out


def test_streamed_batches_equal_direct_per_frame_calls(model, table):
    frames = random_frames(11)
    seg = VideoSegmenter(model, precision="fp32", size=(64, 96), frame_gap=3, batch_size=4, word_vectors=table)
    preds = list(seg.segment(frames, SENTENCE, return_prob=True))
    expected = direct_probs(model, table, frames, SENTENCE, k=3, size=(64, 96))
    assert len(preds) == 11
    for t, (p, e) in enumerate(zip(preds, expected)):
        assert p.prob.shape == (49, 71) and p.mask.shape == (49, 71) and p.mask.dtype == bool
        np.testing.assert_allclose(p.prob, e, atol=1e-4)  # batched vs single-frame float rounding
        assert np.array_equal(p.mask, p.prob > 0.5)
        assert p.meta.frame_id == f"{t:05d}" and p.meta.ref_frame_id == f"{max(t - 3, 0):05d}"
        assert p.meta.original_size == (49, 71) and p.frame_index == t
    # the rule matters: another gap gives other probabilities from frame 1 on
    other = direct_probs(model, table, frames, SENTENCE, k=1, size=(64, 96))
    assert np.abs(other[5] - expected[5]).max() > 1e-2
    assert np.allclose(other[0], expected[0], atol=1e-4)  # frame 0 is its own reference either way


def test_sentence_encoded_once_and_frames_batched(model, table, monkeypatch):
    calls = {"encode_text": 0, "segment_many": []}
    encode, segment_many = model.encode_text, model.segment_many

    def counting_encode(*a, **kw):
        calls["encode_text"] += 1
        return encode(*a, **kw)

    def counting_segment_many(frame, ref, texts):
        calls["segment_many"].append((frame.shape[0], len(texts)))
        return segment_many(frame, ref, texts)

    monkeypatch.setattr(model, "encode_text", counting_encode)
    monkeypatch.setattr(model, "segment_many", counting_segment_many)
    seg = VideoSegmenter(model, precision="fp32", size=(32, 32), frame_gap=2, batch_size=4, word_vectors=table)
    assert len(list(seg.segment(random_frames(10, 20, 30), SENTENCE))) == 10
    assert calls == {"encode_text": 1, "segment_many": [(4, 1), (4, 1), (2, 1)]}
    calls["encode_text"], calls["segment_many"] = 0, []
    assert len(list(seg.segment_many(random_frames(6, 20, 30), [SENTENCE, "a blue square"]))) == 6
    assert calls == {"encode_text": 2, "segment_many": [(4, 2), (2, 2)]}  # both sentences in one model call


def _stream_stats(seg, n):
    """Run `n` generated frames; return (max frames pulled but not yet yielded, traced peak bytes)."""
    state = {"pulled": 0}

    def frames():
        rng = np.random.default_rng(0)
        for _ in range(n):
            state["pulled"] += 1
            yield rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)

    lag = 0
    tracemalloc.start()
    try:
        for done, pred in enumerate(seg.segment(frames(), SENTENCE), start=1):
            lag = max(lag, state["pulled"] - done)
            del pred
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return lag, peak, done


def test_memory_is_flat_in_video_length(model, table):
    seg = VideoSegmenter(model, precision="fp32", size=(32, 32), frame_gap=6, batch_size=8, word_vectors=table)
    _stream_stats(seg, 20)  # warm-up: first-call allocations (lazy imports, caches) are not the video's
    lag_short, peak_short, n_short = _stream_stats(seg, 100)
    lag_long, peak_long, n_long = _stream_stats(seg, 600)
    assert (n_short, n_long) == (100, 600)
    # results come out as soon as their batch is done: never more than one batch of frames in flight
    assert lag_short <= 8 and lag_long <= 8
    assert seg.max_buffered == 6 + 8  # the ring buffer: last k + batch_size preprocessed frames
    # one frame is 57.6 kB; holding the video would add ≥ 28 MB for the long run
    assert peak_long < peak_short * 1.5 + 200_000, (peak_short, peak_long)


def test_one_frame_video(model, table):
    preds = list(VideoSegmenter(model, precision="fp32", size=(32, 32), word_vectors=table).segment(random_frames(1), SENTENCE))
    assert len(preds) == 1 and preds[0].mask.shape == (49, 71) and preds[0].meta.ref_frame_id == "00000"


def test_long_non_ascii_sentence_is_truncated_to_25_tokens(model, table):
    words = ["the", "red", "circle", "moving", "left", "ñandú", "größer", "猫", "très", "вправо"]
    long_sentence = " ".join(words[i % len(words)] for i in range(200))
    truncated = " ".join(long_sentence.split()[:25])
    seg = VideoSegmenter(model, precision="fp32", size=(32, 32), frame_gap=1, word_vectors=table)
    frames = random_frames(3)
    a = [p.prob for p in seg.segment(frames, long_sentence, return_prob=True)]
    b = [p.prob for p in seg.segment(frames, truncated, return_prob=True)]
    c = [p.prob for p in seg.segment(frames, "the blue square moving right", return_prob=True)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(np.abs(x - z).max() > 1e-4 for x, z in zip(a, c))  # the words do matter


def test_rgba_and_grayscale_frames_match_their_rgb_version(model, table):
    rgb = random_frames(4, seed=3)
    gray = [f[..., 0] for f in rgb]
    rgba = [np.dstack([f, np.full(f.shape[:2], 7, np.uint8)]) for f in rgb]
    seg = VideoSegmenter(model, precision="fp32", size=(32, 64), frame_gap=2, batch_size=3, word_vectors=table)
    ref = [p.prob for p in seg.segment(rgb, SENTENCE, return_prob=True)]
    as_rgba = [p.prob for p in seg.segment(rgba, SENTENCE, return_prob=True)]
    as_gray = [p.prob for p in seg.segment(gray, SENTENCE, return_prob=True)]
    expected_gray = [p.prob for p in seg.segment([np.repeat(g[..., None], 3, 2) for g in gray], SENTENCE,
                                                 return_prob=True)]
    assert all(np.array_equal(a, b) for a, b in zip(ref, as_rgba))
    assert all(np.array_equal(a, b) for a, b in zip(expected_gray, as_gray))


def test_segment_many_decodes_once_and_matches_segment(model, table):
    frames = random_frames(5)
    seg = VideoSegmenter(model, precision="fp32", size=(32, 32), frame_gap=2, batch_size=2, word_vectors=table)
    sentences = [SENTENCE, "the blue square moving right"]
    per_frame = list(seg.segment_many(iter(frames), sentences, return_prob=True))  # a one-shot iterator
    assert len(per_frame) == 5 and all(len(p) == 2 for p in per_frame)
    for j, s in enumerate(sentences):
        single = [p.prob for p in seg.segment(frames, s, return_prob=True)]
        # several sentences share one batched model call: equal to float rounding (LBDT.segment_many)
        assert all(np.allclose(per_frame[t][j].prob, single[t], rtol=0, atol=1e-6) for t in range(5))
        assert all(per_frame[t][j].meta.sentence == s and per_frame[t][j].sentence_index == j for t in range(5))


def test_threshold_and_frames_on_request(model, table):
    frames = random_frames(2)
    everything = VideoSegmenter(model, precision="fp32", size=(32, 32), word_vectors=table, threshold=0.0)
    nothing = VideoSegmenter(model, precision="fp32", size=(32, 32), word_vectors=table, threshold=1.0)
    p = next(iter(everything.segment(frames, SENTENCE, return_frames=True, return_prob=True)))
    assert p.mask.all() and p.score == pytest.approx(float(p.prob.mean()), rel=1e-5)  # mean prob inside the mask
    assert np.array_equal(p.frame, frames[0])
    q = next(iter(nothing.segment(frames, SENTENCE)))
    assert not q.mask.any() and q.score == 0.0 and q.prob is None and q.frame is None


def test_frames_of_different_sizes_keep_their_own_size(model, table):
    frames = [np.zeros((20, 30, 3), np.uint8), np.zeros((33, 17, 3), np.uint8)]
    preds = list(VideoSegmenter(model, precision="fp32", size=(32, 32), word_vectors=table).segment(frames, SENTENCE))
    assert [p.mask.shape for p in preds] == [(20, 30), (33, 17)]


def test_bf16_runs_on_cpu(model, table):
    seg = VideoSegmenter(model, size=(32, 32), precision="bf16", word_vectors=table)
    preds = list(seg.segment(random_frames(3), SENTENCE, return_prob=True))
    assert len(preds) == 3 and preds[0].prob.dtype == np.float32


@pytest.mark.parametrize("sentence", ["", "   ", "."])
def test_empty_sentence_is_a_clear_error(model, table, sentence):
    seg = VideoSegmenter(model, precision="fp32", size=(32, 32), word_vectors=table)
    with pytest.raises(LBDTError, match="empty sentence") as e:
        seg.segment(random_frames(2), sentence)  # raised at the call, before any frame is read
    assert "\n" not in str(e.value)


def test_configuration_errors(model, table):
    with pytest.raises(LBDTError, match="multiples of 32"):
        VideoSegmenter(model, size=(50, 64), word_vectors=table)
    with pytest.raises(LBDTError, match="fp16 needs a CUDA device"):
        VideoSegmenter(model, precision="fp16")
    with pytest.raises(LBDTError, match="unknown precision"):
        VideoSegmenter(model, precision="int8")
    with pytest.raises(LBDTError, match="frame_gap"):
        VideoSegmenter(model, frame_gap=-1)
    with pytest.raises(LBDTError, match="batch_size"):
        VideoSegmenter(model, batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(LBDTError, match="no usable CUDA"):
            VideoSegmenter(model, device="cuda")
    with pytest.raises(LBDTError, match="no word vectors"):
        VideoSegmenter(model, size=(32, 32))
