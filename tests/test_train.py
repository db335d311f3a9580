"""Training: the data order, atomic checkpoints, the CLI, DDP on CPU, and exact kill-and-resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lbdt.checkpoint import read_checkpoint as load_checkpoint
from lbdt.engine.distributed import EpochSampler
from lbdt.errors import LBDTError

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model is far faster on one thread on a shared 2-core machine (as the subprocesses run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- data order


def test_sampler_order_is_a_function_of_seed_and_epoch():
    a = EpochSampler(10, seed=3, shuffle=True)
    b = EpochSampler(10, seed=3, shuffle=True)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == list(range(10))
    b.set_epoch(3)
    assert list(a) != list(b)
    a.set_epoch(2, start=4)  # resume mid-epoch: the same order, minus what was consumed
    b.set_epoch(2)
    assert list(a) == list(b)[4:] and len(a) == 6


def test_sampler_shards_like_distributed_sampler():
    shards = []
    for rank in range(3):
        s = EpochSampler(10, seed=0, rank=rank, world_size=3)
        s.set_epoch(1)
        shards.append(list(s))
    assert [len(x) for x in shards] == [4, 4, 4]  # padded to 12
    full = EpochSampler(10, seed=0)
    full.set_epoch(1)
    order = list(full)
    assert [x for t in zip(*shards) for x in t] == (order + order[:2])


# ---------------------------------------------------------------- training runs on the synthetic benchmark


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic benchmark (a2d format): 2 train videos x 4 objects x 3 frames = 24 samples."""
    from lbdt.data.synth import write_benchmark

    root = tmp_path_factory.mktemp("synthetic") / "bench"
    write_benchmark(root, fmt="a2d", seed=5, videos=(2, 1, 1), annotated=3, progress=False)
    return root


def _overrides(root: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.root={root}", f"train.output_dir={out}", "data.size=[64,64]", "data.num_workers=0",
            "train.log_every=1", *extra]


def test_cli_two_steps_writes_run(synth_root, tmp_path):
    """`lbdt train synthetic_tiny` for one epoch of 2 steps: checkpoints, config, log, plot, validation."""
    from lbdt.cli import main
    from lbdt.config import load_config, to_dict

    out = tmp_path / "run"
    args = _overrides(synth_root, out, "train.batch_size=12", "train.epochs=1")
    assert main(["train", "synthetic_tiny", *args]) == 0
    cfg = load_config("synthetic_tiny", args)
    assert load_config(str(out / "config.yaml")) == cfg
    last = load_checkpoint(out / "last.pt")
    assert last["config"] == to_dict(cfg) and last["variant"] == "tiny"
    assert (last["step"], last["epoch"], last["epoch_batches"]) == (2, 1, 0)
    assert last["scheduler"]["last_epoch"] == 1
    assert (out / "best.pt").is_file() and (out / "curves.png").stat().st_size > 0
    assert last["best"]["metric"] == "mean_iou" and last["history"][0]["epoch"] == 1
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,split,name,value"
    assert {r.split(",")[0] for r in rows[1:] if ",train,loss," in r} == {"1", "2"}
    assert any(",val,mean_iou," in r for r in rows)
    from lbdt.models.lbdt import LBDT

    model = LBDT.from_config(last["model_config"])
    model.load_state_dict(last["model"])  # the checkpoint rebuilds the network


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(check=False, args=[sys.executable, *args], env=ENV, capture_output=True, text=True, timeout=300, **kw)


KILL_AFTER = """
import os, signal, sys
import lbdt.engine.train as T
from lbdt.cli import main
calls = 0
real_loss = T.segmentation_loss
def loss_then_die(*a, **k):
    global calls
    calls += 1
    if calls == int(os.environ["KILL_AT_CALL"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_loss(*a, **k)
T.segmentation_loss = loss_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_and_resume_gives_identical_weights(synth_root, tmp_path):
    """Killed (SIGKILL) mid-epoch after a mid-epoch checkpoint, then `--resume`d: the same final state as an
    uninterrupted run, bit for bit (CPU; with augmentation on, so the per-epoch draws must line up too)."""
    common = ["train", "synthetic_tiny", "train.batch_size=4", "train.epochs=2", "train.checkpoint_every=4",
              "data.augment=true"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    r = _run(["-m", "lbdt.cli", *common, *_overrides(synth_root, full)])
    assert r.returncode == 0, r.stderr
    script = tmp_path / "kill.py"
    script.write_text(KILL_AFTER)
    # 6 steps per epoch; checkpoint at step 4; killed inside step 6, before the epoch ends
    r = subprocess.run(check=False, args=[sys.executable, str(script), *common, *_overrides(synth_root, killed)],
                       env={**ENV, "KILL_AT_CALL": "6"}, capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    mid = load_checkpoint(killed / "last.pt")
    assert (mid["step"], mid["epoch"], mid["epoch_batches"]) == (4, 0, 4)
    r = _run(["-m", "lbdt.cli", *common, *_overrides(synth_root, killed), "--resume"])
    assert r.returncode == 0, r.stderr
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(killed / "last.pt")
    assert a["step"] == b["step"] == 12
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert a["history"] == b["history"] and a["scheduler"] == b["scheduler"]
    # the killed run's log rows after step 4 were replaced, not duplicated (throughput differs, of course)
    def log(run):
        return [r for r in (run / "metrics.csv").read_text().splitlines() if "samples_per_s" not in r]

    assert log(killed) == log(full)


DDP_SCRIPT = """
import json, os, sys, torch
import lbdt.engine.train as T
from lbdt.config import load_config
built, sizes = [], []
real_build, real_loss = T.build_model, T.segmentation_loss
T.build_model = lambda cfg: built.append(real_build(cfg)) or built[-1]
T.segmentation_loss = lambda logits, *a, **k: sizes.append(int(logits.shape[0])) or real_loss(logits, *a, **k)
cfg = load_config("synthetic_tiny", sys.argv[1:])
T.train(cfg)
torch.save(dict(built[0].named_parameters()), os.path.join(cfg.train.output_dir, f"rank{os.environ['RANK']}.pt"))
with open(os.path.join(cfg.train.output_dir, f"sizes{os.environ['RANK']}.json"), "w") as f:
    json.dump(sizes, f)
"""
GLOBAL_BATCH = ("train.global_batch=8", "train.batch_size=2", "data.val_split=")  # 24 samples: 3 steps of 8


def _check_global_batch(out: Path, sizes: list[list[int]], world: int) -> None:
    """8 samples per optimizer step over all processes, in forwards of 2: 4 // world micro-batches per step."""
    import json

    runtime = json.loads((out / "runtime.json").read_text())
    assert (runtime["world_size"], runtime["global_batch"], runtime["per_process_batch"],
            runtime["grad_accum"]) == (world, 8, 2, 4 // world)
    assert all(s == [2] * (12 // world) for s in sizes)  # every forward is 2 samples; 24 in all
    saved = load_checkpoint(out / "last.pt")
    assert all(s["step"].item() == saved["step"] == 3 for s in saved["optimizer"]["state"].values())
    assert sum(map(sum, sizes)) / saved["step"] == 8  # the effective batch


def test_ddp_two_processes_gloo_keep_weights_identical(synth_root, tmp_path):
    """torchrun, 2 CPU processes (gloo): after the steps, both ranks hold the same weights and rank 0 saved them;
    train.global_batch=8 with at most 2 per forward: each rank accumulates 2 micro-batches of 2 per step."""
    import json

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    r = _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
              *_overrides(synth_root, out, *GLOBAL_BATCH, "train.max_steps=3")])
    assert r.returncode == 0, r.stderr[-3000:]
    p0 = torch.load(out / "rank0.pt", weights_only=True)
    p1 = torch.load(out / "rank1.pt", weights_only=True)
    saved = load_checkpoint(out / "last.pt")
    # 24 samples / global batch 8 = 3 steps: one whole epoch
    assert (saved["step"], saved["epoch"], saved["epoch_batches"]) == (3, 1, 0)
    _check_global_batch(out, [json.loads((out / f"sizes{rank}.json").read_text()) for rank in (0, 1)], world=2)
    init = T_init_params()
    moved = 0
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k
        assert torch.equal(p0[k], saved["model"][k]), k
        moved += not torch.equal(p0[k], init[k])
    assert moved > len(p0) // 2  # it trained



def test_global_batch_in_one_process_accumulates(synth_root, tmp_path, monkeypatch):
    """The same train.global_batch=8 in one process: 4 micro-batches of 2 per step, the same 3 steps of 8."""
    import lbdt.engine.train as T
    from lbdt.config import load_config

    sizes: list[int] = []
    real_loss = T.segmentation_loss
    monkeypatch.setattr(T, "segmentation_loss", lambda logits, *a, **k: sizes.append(int(logits.shape[0]))
                        or real_loss(logits, *a, **k))
    out = tmp_path / "one"
    result = T.train(load_config("synthetic_tiny", _overrides(synth_root, out, *GLOBAL_BATCH, "train.epochs=1")))
    assert (result["step"], result["global_batch"], result["grad_accum"]) == (3, 8, 4)
    _check_global_batch(out, [sizes], world=1)


def T_init_params() -> dict:
    from lbdt.config import load_config
    from lbdt.engine.train import build_model, seed_everything

    seed_everything(load_config("synthetic_tiny").train.seed)
    return dict(build_model(load_config("synthetic_tiny")).named_parameters())


# ---------------------------------------------------------------- initialisation and precision


def test_imagenet_init_from_local_file_and_offline_url(tmp_path):
    from lbdt.config import load_config
    from lbdt.engine.train import build_model, load_imagenet

    model = build_model(load_config("synthetic_tiny"))
    # a torchvision-named ResNet state dict (as resnet50-0676ba61.pth, here for the tiny variant's ResNet)
    donor = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in model.spatial_backbone.state_dict().items()}
    donor |= {"fc.weight": torch.zeros(10, 8), "fc.bias": torch.zeros(10)}
    path = tmp_path / "resnet.pth"
    torch.save(donor, path)
    load_imagenet(model, str(path))
    for stream in (model.spatial_backbone, model.temporal_backbone):
        for k, v in stream.state_dict().items():
            assert torch.equal(v, donor[k]), k
    with pytest.raises(LBDTError, match="cannot download ImageNet weights .* model.imagenet_weights"):
        load_imagenet(model, "http://127.0.0.1:9/resnet50-0676ba61.pth")


def test_bf16_autocast_step_on_cpu(synth_root, tmp_path):
    from lbdt.config import load_config
    from lbdt.engine.train import train

    cfg = load_config("synthetic_tiny", _overrides(synth_root, tmp_path / "bf16", "train.precision=bf16",
                                                  "train.batch_size=4", "train.max_steps=2", "data.val_split="))
    result = train(cfg)
    assert result["step"] == 2
    rows = [r.split(",") for r in (tmp_path / "bf16" / "metrics.csv").read_text().splitlines()[1:]]
    losses = [float(r[4]) for r in rows if r[3] == "loss"]
    assert len(losses) == 2 and all(0.0 < v < 2.0 for v in losses)
    with pytest.raises(LBDTError, match="fp16 needs a CUDA device"):
        train(load_config("synthetic_tiny", _overrides(synth_root, tmp_path / "fp16", "train.precision=fp16",
                                                       "train.device=cpu")))


def test_grad_accumulation_and_clipping_count_optimizer_steps(synth_root, tmp_path):
    """24 samples, batch 4, 2 micro-batches per step: 3 optimizer steps per epoch; clipping on."""
    from lbdt.config import load_config
    from lbdt.engine.train import train

    out = tmp_path / "accum"
    cfg = load_config("synthetic_tiny", _overrides(synth_root, out, "train.batch_size=4", "train.grad_accum=2",
                                                  "train.clip_grad_norm=0.5", "train.epochs=2", "data.val_split="))
    result = train(cfg)
    assert (result["step"], result["epoch"], result["finished"]) == (6, 2, True)
    state = load_checkpoint(out / "last.pt")
    assert all(s["step"].item() == 6 for s in state["optimizer"]["state"].values())
    assert state["scheduler"]["last_epoch"] == 2 and not (out / "best.pt").exists()  # no validation split


SIGINT_AT = """
import os, signal, sys
import lbdt.engine.train as T
from lbdt.cli import main
calls = 0
real_loss = T.segmentation_loss
def loss_then_ctrl_c(*a, **k):
    global calls
    calls += 1
    if calls == int(os.environ["SIGINT_AT_CALL"]):
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends, here inside the step's forward pass
    return real_loss(*a, **k)
T.segmentation_loss = loss_then_ctrl_c
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_in_the_first_epoch_saves_last_pt_and_resume_says_from_where(synth_root, tmp_path):
    """SIGINT during step 3 of the first epoch (no checkpoint yet): the step finishes, `last.pt` is written
    (atomically, through save_checkpoint) and named; `--resume` names what it continues from and ends with the
    same weights as an uninterrupted run."""
    common = ["train", "synthetic_tiny", "train.batch_size=4", "train.epochs=2", "train.precision=fp32"]
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    r = _run(["-m", "lbdt.cli", *common, *_overrides(synth_root, full)])
    assert r.returncode == 0, r.stderr
    # the start-up header: folder, device and precision with the reason, samples, schedule
    assert f"lbdt train: writing {full}/ | 1 process(es) on cpu, fp32 (requested), 1 CPU threads" in r.stderr
    assert ("24 training samples (a2d at " in r.stderr and "12 validation samples (val)" in r.stderr
            and "batch 4 x 1 accumulated, 6 steps per epoch, 2 epochs" in r.stderr)
    script = tmp_path / "ctrl_c.py"
    script.write_text(SIGINT_AT)
    r = subprocess.run(check=False, args=[sys.executable, str(script), *common, *_overrides(synth_root, stopped)],
                       env={**ENV, "SIGINT_AT_CALL": "3"}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 130, r.stderr
    assert (f"lbdt train: interrupted (Ctrl-C): saved {stopped / 'last.pt'} at step 3, epoch 1 after 3 batches; "
            "continue with the same command and --resume") in r.stderr
    assert r.stdout.startswith("stopped: step 3, epoch 0")
    mid = load_checkpoint(stopped / "last.pt")
    assert (mid["step"], mid["epoch"], mid["epoch_batches"]) == (3, 0, 3)
    assert [p.name for p in stopped.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    r = _run(["-m", "lbdt.cli", *common, *_overrides(synth_root, stopped), "--resume"])
    assert r.returncode == 0, r.stderr
    assert f"lbdt train: resuming from {stopped / 'last.pt'}: step 3, epoch 1 after 3 batches" in r.stderr
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(stopped / "last.pt")
    assert a["step"] == b["step"] == 12
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_train_names_the_synth_command_and_hints_config_syntax(tmp_path, capsys):
    from lbdt.cli import main

    missing = tmp_path / "no_bench"
    assert main(["train", "synthetic_tiny", f"data.root={missing}", f"train.output_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert err == (f"lbdt train: error: data.root {missing}: not found; this configuration trains on the synthetic "
                   f"benchmark, write it first: lbdt synth --format a2d --out {missing}\n")
    with pytest.raises(SystemExit) as e:
        main(["train", "synthetic_tiny", "--lr", "1e-4", "--epoch=3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert ("unrecognized arguments: --lr 1e-4 --epoch=3 (configuration fields are set as SECTION.FIELD=VALUE: "
            "--lr -> train.lr=1e-4; --epoch=3 -> train.epochs=3)") in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["train", "synthetic_tiny", "--resme"])
    assert "(did you mean: --resme -> --resume?)" in capsys.readouterr().err


def test_busy_cpu_warning_at_the_start_of_training(synth_root, tmp_path, capsys, monkeypatch):
    from lbdt.cli import main
    from lbdt.cpu_load import CPULoad

    monkeypatch.setattr("lbdt.engine.train.read_load", lambda: CPULoad(load_average=2.0, cores=2, threads=2))
    args = _overrides(synth_root, tmp_path / "run", "train.batch_size=12", "train.epochs=1", "train.max_steps=1",
                      "data.val_split=")
    assert main(["train", "synthetic_tiny", *args]) == 0
    err = capsys.readouterr().err
    assert ("lbdt train: warning: the machine is busy: load average 2.0 over the last minute on 2 cores, and torch "
            "runs 2 threads, so timings are slow and noisy; --threads 1 fits the free cores better") in err
    assert err.index("lbdt train: writing") < err.index("warning: the machine is busy")
