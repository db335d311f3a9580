"""Evaluation on many processes (`lbdt.engine.distributed`: shard, pack, gather; `evaluate` under torchrun).

Two gloo processes (torch.multiprocessing spawn, CPU) must give exactly the metrics, masks and submission
zip of one process.
"""

from __future__ import annotations

import json
import os
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lbdt.engine.distributed import DistInfo, describe_share, gather, pack, shard
from lbdt.errors import LBDTError
from lbdt.types import Prediction, SampleMeta
from tiny_bench import write_tiny_bench

ALONE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
VIDEOS = ["a", "a", "b", "c", "c", "c", "d", "e", "e", "a"]  # "a" appears again at the end


# ---------------------------------------------------------------- shard


def test_shard_contiguous_hand_computed():
    # first appearances: a 0, b 2, c 3, d 6, e 7 of N = 10 -> rank = start * 2 // 10: a 0, b 0, c 0, d 1, e 1
    assert shard(VIDEOS, rank=0, world_size=2) == [0, 1, 2, 3, 4, 5, 9]
    assert shard(VIDEOS, rank=1, world_size=2) == [6, 7, 8]
    # world 3: a 0, b 0, c 0 (9 // 10), d 1 (18 // 10), e 2 (21 // 10)
    assert [shard(VIDEOS, rank=r, world_size=3) for r in range(3)] == [[0, 1, 2, 3, 4, 5, 9], [6], [7, 8]]


def test_shard_round_robin_hand_computed():
    assert shard(VIDEOS, rank=0, world_size=2, mode="round_robin") == [0, 1, 3, 4, 5, 7, 8, 9]  # a, c, e
    assert shard(VIDEOS, rank=1, world_size=2, mode="round_robin") == [2, 6]  # b, d


@pytest.mark.parametrize("mode", ["contiguous", "round_robin"])
@pytest.mark.parametrize("world", [1, 2, 3, 7, 12])
def test_shard_is_a_partition_by_video(mode, world):
    rng = np.random.default_rng(world)
    videos = [f"v{int(v)}" for v in np.sort(rng.integers(0, 9, size=40))]
    shares = [shard(videos, rank=r, world_size=world, mode=mode) for r in range(world)]
    assert sorted(i for s in shares for i in s) == list(range(40))  # every sample exactly once
    owners = {}
    for r, s in enumerate(shares):
        assert s == sorted(s)
        for i in s:
            assert owners.setdefault(videos[i], r) == r  # a video is never split
    assert shares == [shard(videos, rank=r, world_size=world, mode=mode) for r in range(world)]  # deterministic


def test_shard_rejects_bad_arguments():
    with pytest.raises(LBDTError, match="shard mode"):
        shard(VIDEOS, rank=0, world_size=2, mode="random")
    with pytest.raises(LBDTError, match="rank 2 is not in"):
        shard(VIDEOS, rank=2, world_size=2)


def test_describe_share():
    info = DistInfo(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    assert describe_share([6, 7, 8], VIDEOS, info) == "rank 1/2: 2 of 5 videos, 3 of 10 samples"


# ---------------------------------------------------------------- pack / gather (one process)


def _meta(i: int) -> SampleMeta:
    return SampleMeta(dataset="a2d", video_id=f"v{i}", object_id="1", frame_id=f"{i:05d}", ref_frame_id=f"{i:05d}", sentence="the dog",
                      original_size=(5, 7))


def test_pack_round_trip():
    rng = np.random.default_rng(0)
    mask, gt = rng.random((5, 7)) > 0.5, rng.random((5, 7)) > 0.3  # 35 pixels: not a multiple of 8
    pred, got_gt = pack(Prediction(meta=_meta(0), mask=mask, score=0.25, prob=np.ones((5, 7))), gt).unpack()
    assert np.array_equal(pred.mask, mask) and pred.mask.dtype == bool and np.array_equal(got_gt, gt)
    assert pred.meta == _meta(0) and pred.score == 0.25 and pred.prob is None
    packed = pack(Prediction(meta=_meta(1), mask=mask), None)
    assert len(packed.mask) == 5 and packed.unpack()[1] is None  # ceil(35 / 8) bytes
    with pytest.raises(LBDTError, match="differ in size"):
        pack(Prediction(meta=_meta(0), mask=mask), gt[:4])


def test_gather_alone_orders_and_checks():
    assert gather([(2, "c"), (0, "a"), (1, "b")], ALONE, total=3) == ["a", "b", "c"]
    with pytest.raises(LBDTError, match="sample 1 was evaluated by more than one rank"):
        gather([(1, "b"), (0, "a"), (1, "b")], ALONE)
    with pytest.raises(LBDTError, match=r"gathered 2 of 3 samples; missing e.g. \[1\]"):
        gather([(2, "c"), (0, "a")], ALONE, total=3)


# ---------------------------------------------------------------- two gloo processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, bench: str, out: str) -> None:
    """One torchrun-like rank: gather a hand-made share, then evaluate two splits."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    from lbdt.engine.distributed import init_distributed
    from lbdt.engine.evaluate import EvaluateSettings, evaluate

    info = init_distributed("cpu")
    mine = [(i, f"item{i}-from-rank{rank}") for i in shard(VIDEOS, rank=rank, world_size=world)]
    reports = {"gathered": gather(mine, info, total=len(VIDEOS))}
    root = Path(bench)
    reports["a2d"] = evaluate(str(root / "tiny.pt"), EvaluateSettings(dataset="a2d", root=str(root / "a2d"), split="test",
                              batch_size=3, device="cpu", output_dir=f"{out}/a2d", save_masks=True, progress=False))
    reports["ytvos"] = evaluate(str(root / "tiny.pt"), EvaluateSettings(dataset="ytvos", root=str(root / "ytvos"), split="valid",
                                batch_size=3, device="cpu", output_dir=f"{out}/ytvos", progress=False))
    dist.destroy_process_group()
    Path(f"{out}/reports-rank{rank}.json").write_text(json.dumps(reports))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Tiny synthetic a2d and ytvos benchmarks and a tiny checkpoint whose masks are neither empty nor full."""
    return write_tiny_bench(tmp_path_factory.mktemp("bench"), seed=1, test_videos=3, decisive_head=True)


@pytest.fixture(scope="module")
def runs(bench, tmp_path_factory):
    """{"one": output folder of one process, "two": of two gloo processes} and the reports of each."""
    from lbdt.engine.evaluate import EvaluateSettings, evaluate

    one = tmp_path_factory.mktemp("one")
    reports = {
        "a2d": evaluate(str(bench / "tiny.pt"), EvaluateSettings(dataset="a2d", root=str(bench / "a2d"), split="test", batch_size=3,
                        device="cpu", output_dir=str(one / "a2d"), save_masks=True, progress=False)),
        "ytvos": evaluate(str(bench / "tiny.pt"), EvaluateSettings(dataset="ytvos", root=str(bench / "ytvos"), split="valid",
                          batch_size=3, device="cpu", output_dir=str(one / "ytvos"), progress=False)),
    }
    two = tmp_path_factory.mktemp("two")
    mp.start_processes(_worker, args=(2, _free_port(), str(bench), str(two)), nprocs=2, join=True,
                       start_method="spawn")
    ranks = [json.loads((two / f"reports-rank{r}.json").read_text()) for r in range(2)]
    return {"one": one, "two": two, "one_reports": json.loads(json.dumps(reports)), "ranks": ranks}


def test_gather_across_two_processes(runs):
    expected = [f"item{i}-from-rank{0 if i in shard(VIDEOS, rank=0, world_size=2) else 1}" for i in range(10)]
    assert runs["ranks"][0]["gathered"] == expected
    assert runs["ranks"][1]["gathered"] is None
    assert {item[-1] for item in expected} == {"0", "1"}  # both ranks contributed


def _strip(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("world_size", "outputs")}


@pytest.mark.parametrize("split", ["a2d", "ytvos"])
def test_two_processes_report_exactly_what_one_does(runs, split):
    one = runs["one_reports"][split]
    for rank in range(2):  # every rank returns rank 0's report
        two = runs["ranks"][rank][split]
        assert _strip(two) == _strip(one) and two["world_size"] == 2 and one["world_size"] == 1
    saved = [json.loads((runs[k] / split / "metrics.json").read_text()) for k in ("one", "two")]
    assert _strip(saved[1]) == _strip(saved[0]) and saved[1]["world_size"] == 2
    if split == "a2d":
        assert 0 < one["metrics"]["overall_iou"] < 1  # real masks: some pixels right, some wrong


def test_two_processes_write_the_same_masks(runs):
    files = [sorted(p.relative_to(runs[k] / "a2d" / "masks") for p in (runs[k] / "a2d" / "masks").rglob("*.png"))
             for k in ("one", "two")]
    assert files[0] == files[1] and len(files[0]) == runs["one_reports"]["a2d"]["N"]
    for rel in files[0]:
        assert (runs["one"] / "a2d" / "masks" / rel).read_bytes() == (runs["two"] / "a2d" / "masks" / rel).read_bytes()


def test_two_processes_write_the_same_submission(runs):
    entries = []
    for k in ("one", "two"):
        with zipfile.ZipFile(runs[k] / "ytvos" / "submission.zip") as z:
            entries.append([(name, z.read(name)) for name in z.namelist()])  # in the order written
    assert entries[0] == entries[1] and len(entries[0]) == runs["one_reports"]["ytvos"]["N"]
    videos = {name.split("/")[1] for name, _ in entries[0]}
    assert len(videos) >= 2  # several videos, so each rank had a share
