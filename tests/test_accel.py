"""Training device, precision and data loader workers on the CPU (train.device, train.precision, dataset.workers),
the one-line errors for a device that is not there, the parent process that never initializes CUDA, GPU slots."""

import json
import os
import threading

import pytest
import torch
from conftest import cli, fast_host

from compress import accel, machine, pipeline
from compress.config import build
from compress.data.base import TensorImages
from compress.data.torchvision_sets import _transforms
from compress.errors import UserError
from compress.train import Recipe, fit

FAST = ["train.epochs=3", "dataset.limit_train=2000", "device.iters=5", "device.warmup=1", "device.min_time_s=0",
        "device.rounds=1"]
# acc_top1 of this configuration measured with the code before GPU support (main at c215369, same seed) on this CI's
# x86-64 CPU; the tolerance (4 of 1,000 test images) is for other CPUs' float rounding, not for a changed recipe.
ACC_BEFORE_GPU_SUPPORT = 0.928


def _state(model: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_train_device_cpu_reproduces_the_numbers_before_gpu_support_and_auto_is_the_same_entry(tmp_path):
    rows = {}
    for device in ("cpu", "auto"):
        done = cli(f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / device}", *FAST,
                   f"train.device={device}")  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        rows[device] = json.loads((tmp_path / device / "result.json").read_text())
    assert rows["cpu"]["acc_top1"] == pytest.approx(ACC_BEFORE_GPU_SUPPORT, abs=0.004)
    assert (rows["cpu"]["train_device"], rows["cpu"]["train_precision"]) == ("cpu", "fp32")
    assert rows["auto"]["base_from"] == "cache" and rows["auto"]["artifact_from"] == "cache"  # auto = cpu here


def _guard_cuda(monkeypatch) -> list[str]:
    """Record every call into CUDA's device discovery or initialization made by this process (not its forks)."""
    calls, parent = [], os.getpid()
    for name in ("is_available", "device_count", "_lazy_init", "init", "get_device_name"):
        original = getattr(torch.cuda, name)

        def guarded(*args, _original=original, _name=name, **kwargs):
            if os.getpid() == parent:
                calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch.cuda, name, guarded)
    return calls


def test_bf16_on_the_cpu_trains_the_row_says_so_and_the_parent_never_touches_cuda(make_cfg, monkeypatch):
    accel.seen.cache_clear()  # ask again, under the guard
    calls = _guard_cuda(monkeypatch)
    cfg = make_cfg("train.precision=bf16", "train.epochs=3", "dataset.limit_train=2000")  # train.device=auto
    row: dict = {}
    pipeline.run_variant(cfg, fast_host(), row)
    assert row["status"] == "ok" and (row["train_device"], row["train_precision"]) == ("cpu", "bf16")
    assert row["acc_top1"] > 0.9  # 0.935 here; fp32 gives 0.928
    assert calls == [] and not torch.cuda.is_initialized()  # every stage and the device probe were forks


def _fit(cfg, data, training: accel.Training, monkeypatch) -> dict:
    monkeypatch.setattr(accel, "_current", training)
    torch.manual_seed(0)
    model = build(cfg.model)
    return _state(fit(model, data, Recipe(epochs=1, lr=0.05, grad_clip=5.0), seed=0))


def test_fp16_on_the_cpu_trains_with_a_gradient_scaler_and_fp32_is_the_plain_loop(make_cfg, monkeypatch):
    cfg = make_cfg("dataset.limit_train=1000")
    data = build(cfg.dataset).train
    plain = _fit(cfg, data, accel.Training(), monkeypatch)
    explicit = _fit(cfg, data, accel.Training(torch.device("cpu"), "fp32", 0), monkeypatch)
    fp16 = _fit(cfg, data, accel.Training(precision="fp16"), monkeypatch)
    assert _same(plain, explicit)
    assert not _same(plain, fp16) and all(v.dtype == plain[k].dtype for k, v in fp16.items())  # fp32 master weights
    assert accel.Training(precision="fp16").scaler().is_enabled() and not accel.Training().scaler().is_enabled()


def test_two_loader_workers_inside_a_stage_give_the_base_model_of_workers_0(make_cfg):
    states = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as run_variant: the stage is a fork of this process
    try:
        for workers in (0, 2):
            cfg = make_cfg(f"dataset.workers={workers}", "dataset.augment=false", "train.epochs=1",
                           "dataset.limit_train=1000")  # fmt: skip
            model, _ = pipeline.base_model(cfg, build(cfg.dataset))
            states.append(_state(model))
    finally:
        torch.set_num_threads(threads)
    assert _same(*states)


def test_cifar_augmentation_in_workers_is_reproducible_run_to_run(make_cfg, monkeypatch):
    cfg = make_cfg("model=resnet20", "dataset=fake")
    torch.manual_seed(1)
    images = (torch.rand(256, 3, 32, 32) * 255).to(torch.uint8)
    train_tf, _ = _transforms([3, 32, 32], [0.5] * 3, [0.25] * 3, crop_padding=4, flip=True)
    data = TensorImages(images, torch.randint(0, 10, (256,)), train_tf)
    first, second = (_fit(cfg, data, accel.Training(workers=2), monkeypatch) for _ in range(2))
    assert _same(first, second)
    assert not _same(first, _fit(cfg, data, accel.Training(workers=0), monkeypatch))  # random crops differ


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.device=cuda", "train.device=cuda, but this torch ("),
        ("train.device=mps", "train.device=mps, but this torch ("),
    ],
)
def test_a_device_that_is_not_there_is_one_line_before_anything_trains(tmp_path, override, message):
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has a GPU")
    done = cli(f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}", override)
    printed = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in printed and "base model" not in printed
    failed = [line for line in printed.splitlines() if "variant failed" in line]
    assert len(failed) == 1 and message in failed[0] and "use train.device=cpu or auto" in failed[0]


@pytest.mark.parametrize(
    ("knob", "message"),
    [
        ("train.device=gpu", "train.device=gpu is not a device; use auto, cpu, cuda, cuda:N or mps"),
        ("train.device=cuda:x", "train.device=cuda:x is not a device"),
        ("train.precision=fp8", "train.precision=fp8 is not an option; use fp32, bf16 or fp16"),
        ("dataset.workers=-1", "dataset.workers=-1 must be a whole number ≥ 0"),
        ("train.jobs_per_gpu=0", "train.jobs_per_gpu=0 must be a whole number ≥ 1"),
    ],
)
def test_bad_training_knobs_are_one_line(make_cfg, knob, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        accel.check(make_cfg(knob))


def test_cuda_indexes_are_checked_against_the_gpus_torch_sees(make_cfg, monkeypatch):
    monkeypatch.setattr(accel, "seen", lambda: accel.Seen(("NVIDIA H200", "NVIDIA H200"), False))
    assert accel.check(make_cfg()) == "cuda" and accel.described("cuda:1") == "cuda:NVIDIA H200"
    with pytest.raises(UserError, match=r"train.device=cuda:2, but this torch \(.*\) sees 2 GPU\(s\)"):
        accel.resolve("cuda:2")
    assert accel.train_key(make_cfg("train.device=cuda:1")) == accel.train_key(make_cfg("train.device=cuda"))
    assert accel.train_key(make_cfg("train.device=cuda"))["device"] == "cuda"
    assert accel.train_key(make_cfg("train.device=cuda")) != accel.train_key(make_cfg("train.device=cpu"))


@pytest.fixture
def two_gpus(monkeypatch, tmp_path):
    """A machine with 2 GPUs and 8 CPUs, as the slot picking sees it; the locks in a private dir."""
    monkeypatch.setattr(accel, "seen", lambda: accel.Seen(("GPU A", "GPU B"), False))
    monkeypatch.setattr(machine, "LOCK_DIR", tmp_path)
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_gpu_ids_follow_cuda_visible_devices(make_cfg, two_gpus, monkeypatch):
    assert accel.gpu_ids(make_cfg("train.device=cuda")) == ["0", "1"]
    assert accel.gpu_ids(make_cfg("train.device=cpu")) == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert accel.gpu_ids(make_cfg("train.device=cuda")) == ["3", "5"]
    assert accel.gpu_ids(make_cfg("train.device=cuda:1")) == ["5"]


def test_concurrent_stages_take_a_free_gpu_each_and_wait_for_one(two_gpus):
    with machine.computing(1, ["0", "1"]):
        first = os.environ["CUDA_VISIBLE_DEVICES"]
        with machine.computing(1, ["0", "1"]):
            second = os.environ["CUDA_VISIBLE_DEVICES"]
            got: list[str] = []
            third = threading.Thread(target=lambda: got.append(_visible_once()))
            third.start()
            third.join(1.0)
            assert third.is_alive() and got == []  # both GPUs taken: the third stage waits
        third.join(10)
        assert got == [second]  # it took the GPU that was given back
    assert (first, second) == ("0", "1") and "CUDA_VISIBLE_DEVICES" not in os.environ


def _visible_once() -> str:
    with machine.computing(1, ["0", "1"]):
        return os.environ["CUDA_VISIBLE_DEVICES"]


def test_jobs_per_gpu_lets_stages_share_a_gpu(two_gpus):
    with machine.computing(1, ["0"], per_gpu=2), machine.computing(1, ["0"], per_gpu=2):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
