"""What a user should know comes before the work: VideoSegmenter's `LBDTNotice` warnings, `lbdt predict`'s
stderr lines (printed before the first frame is segmented) and their record in summary.json; the busy-CPU
check (`lbdt.cpu_load`) with an injected load reading."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest

from lbdt import LBDTNotice, VideoSegmenter
from lbdt.cli import main
from lbdt.cpu_load import CPULoad, better_threads, load_warning
from media import write_mp4

# 12 tokens; synthetic-tiny sees N = 10, so "square moving" is cut off; "dog" is unknown
LONG = "the red circle that is standing still the big dog square moving"


def _notices(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, LBDTNotice)]


def test_video_segmenter_warns_device_demo_model_unknown_and_cut_words():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LBDTNotice)
        seg = VideoSegmenter.from_pretrained("synthetic-tiny", precision="fp32")
    got = _notices(caught)
    assert got[0] == "running on cpu in fp32 (requested)"
    assert got[1].startswith("synthetic-tiny is a demonstration model trained only on lbdt's synthetic clips")
    assert seg.notices == got and seg.max_words == 10
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LBDTNotice)
        seg.encode(LONG)
        seg.encode("the red circle moving left")  # fully known, 5 tokens: nothing to say
    assert _notices(caught) == [
        f"{LONG!r}: not in the model's vocabulary (zero vectors): dog (10% of the sentence)",
        f"{LONG!r}: longer than the model's 10 tokens; cut off: square moving",
    ]
    assert seg.word_vectors.coverage(LONG, max_len=10).cut == ("square", "moving")


def test_predict_prints_every_notice_before_the_first_frame_and_records_them(tmp_path, capsys, monkeypatch):
    first_batch = VideoSegmenter._run_batch

    def marked(self, *args, **kwargs):  # a marker on stderr when the first batch of frames is segmented
        print("<<first batch>>", file=sys.stderr)
        return first_batch(self, *args, **kwargs)

    monkeypatch.setattr(VideoSegmenter, "_run_batch", marked)
    monkeypatch.setattr("lbdt.predictor.read_load", lambda: CPULoad(load_average=0.0, cores=2, threads=1))
    video = tmp_path / "v.mp4"
    write_mp4(video, [np.full((48, 64, 3), 90 + 10 * t, np.uint8) for t in range(3)])
    assert main(["predict", str(video), "--text", LONG, "--out", str(tmp_path / "o"), "--no-overlay",
                 "--batch-size", "2"]) == 0
    err = capsys.readouterr().err
    marker = err.index("<<first batch>>")
    for line in ("lbdt: running on cpu in ", "lbdt: synthetic-tiny is a demonstration model",
                 "not in the model's vocabulary (zero vectors): dog (10% of the sentence)",
                 "longer than the model's 10 tokens; cut off: square moving"):
        assert 0 <= err.index(line) < marker, line
    assert err.count("demonstration model") == 1 and "LBDTNotice" not in err  # lines, not Python warnings
    assert "busy" not in err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    record = summary["sentences"][0]
    assert record["words_cut"] == ["square", "moving"] and record["unknown_words"] == ["dog"]
    assert summary["notices"][0].startswith("running on cpu in ") and len(summary["notices"]) == 4
    assert summary["machine_load"] == {"load_average_1min": 0.0, "cores": 2, "torch_threads": 1}


def test_predict_on_a_busy_cpu_names_the_load_and_a_better_thread_count(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("lbdt.predictor.read_load", lambda: CPULoad(load_average=3.4, cores=2, threads=2))
    video = tmp_path / "v.mp4"
    write_mp4(video, [np.full((48, 64, 3), 90, np.uint8) for _ in range(2)])
    assert main(["predict", str(video), "--text", "the red circle", "--out", str(tmp_path / "o"),
                 "--no-overlay"]) == 0
    err = capsys.readouterr().err
    assert ("lbdt: warning: the machine is busy: load average 3.4 over the last minute on 2 cores, and torch runs "
            "2 threads, so timings are slow and noisy; --threads 1 fits the free cores better, though even 1 thread "
            "shares a core at this load") in err
    assert any("busy" in n for n in json.loads((tmp_path / "o" / "summary.json").read_text())["notices"])


@pytest.mark.parametrize(("load", "cores", "threads", "expected"), [
    (0.2, 2, 2, None),  # idle: 2.2 <= 2.5
    (1.0, 2, 1, None),  # one other process, one thread each
    (1.0, 2, 2, 1),  # one other process: 2 threads oversubscribe, 1 fits
    (5.0, 16, 16, 11),  # 11 cores free
    (5.2, 2, 2, 1),  # busier than the cores: 1 thread, and it still shares a core
    (2.4, 2, 1, "wait"),  # already 1 thread on a full machine
    (None, 2, 2, None),  # no load average on this OS: nothing to say
])
def test_load_warning_values(load, cores, threads, expected):
    reading = CPULoad(load, cores, threads)
    text = load_warning(reading, option="--threads")
    if expected is None:
        assert text is None
    elif expected == "wait":
        assert text.endswith("wait for the load to drop before timing anything") and better_threads(reading) == 1
    else:
        assert f"; --threads {expected} fits the free cores better" in text
        assert text.endswith("shares a core at this load") == (load > cores - 0.5)
        assert f"load average {load:.1f} over the last minute on {cores} cores" in text
        assert better_threads(reading) == expected


def test_benchmark_warns_before_measuring_on_a_busy_cpu_and_quick_ratios_are_flagged(monkeypatch):
    import lbdt.tools.benchmark as B

    order: list[str] = []
    monkeypatch.setattr(B, "read_load", lambda: CPULoad(load_average=4.0, cores=2, threads=2))
    monkeypatch.setattr(B, "run_benchmark", lambda settings, progress: order.append("measure") or {"notes": []})
    monkeypatch.setattr(B, "format_table", lambda result: "table")
    result = B.benchmark(B.BenchmarkSettings(model="tiny", device="cpu"), quick=True, echo=order.append)
    assert order[0].startswith("warning: the machine is busy: load average 4.0 over the last minute on 2 cores")
    assert order[0].endswith("so its ratios (precision against precision, batch against batch) are meaningless "
                             "under this load") and order[1:] == ["measure", "table"]
    assert result["notes"] == ["measured on a busy machine: " + load_warning(CPULoad(4.0, 2, 2))]
    order.clear()
    monkeypatch.setattr(B, "read_load", lambda: CPULoad(load_average=0.1, cores=2, threads=2))
    assert B.benchmark(B.BenchmarkSettings(model="tiny", device="cpu"), echo=order.append)["notes"] == []
    assert order == ["measure", "table"]  # idle: nothing to say


def test_frame_gap_zero_needs_spatial_only_and_is_a_notice(tmp_path, capsys):
    video = tmp_path / "v.mp4"
    write_mp4(video, [np.full((48, 64, 3), 90, np.uint8) for _ in range(2)])
    with pytest.raises(SystemExit):
        main(["predict", str(video), "--text", "the red circle", "--frame-gap", "0", "--out", str(tmp_path / "o")])
    assert "pass --spatial-only to run that on purpose" in capsys.readouterr().err
    assert main(["predict", str(video), "--text", "the red circle", "--spatial-only", "--frame-gap", "2",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--spatial-only means --frame-gap 0; give one of them" in capsys.readouterr().err
    assert main(["predict", str(video), "--text", "the red circle", "--spatial-only", "--no-overlay",
                 "--out", str(tmp_path / "o")]) == 0
    assert "lbdt: frame_gap 0: every frame is its own reference" in capsys.readouterr().err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["model"]["frame_gap"] == 0 and any("spatial-only" in n for n in summary["notices"])
    with pytest.warns(LBDTNotice, match="frame_gap 0"):
        VideoSegmenter.from_pretrained("synthetic-tiny", frame_gap=0)
