"""Where and in what precision this process trains: `train.device` resolved against what torch sees, autocast and
the gradient scaler of `train.precision`, `train.deterministic`, and the data loader knobs that go with the device.

The job process never initializes CUDA (its stages are forks of it, and a CUDA driver does not survive a fork):
what torch sees is asked once in a forked probe, and only a stage's child calls `use()` and touches the GPU.
The settings are per process, like torch's thread count: a stage's child calls `use(cfg)` beside
`isolate.torch_threads`, and `fit`/`evaluate` read `current()` (the CPU in fp32 until then).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from compress.config import plain
from compress.errors import UserError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
TYPES = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class Seen:
    """What this torch can train on: the names of the CUDA GPUs it sees (CUDA_VISIBLE_DEVICES applies) and MPS."""

    gpus: tuple[str, ...]
    mps: bool


def _look(sender) -> None:
    cuda = torch.cuda.is_available()
    names = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if cuda else ()
    sender.send(Seen(names, torch.backends.mps.is_available()))


@functools.cache
def seen() -> Seen:
    """Asked in a forked child, so that this process never initializes CUDA (every later fork can use it)."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_look, args=(sender,), name="pocketbench-devices")
    child.start()
    sender.close()
    try:
        return receiver.recv() if receiver.poll(120) else Seen((), False)
    except EOFError:  # the probe crashed (a broken driver): nothing usable
        return Seen((), False)
    finally:
        receiver.close()
        child.join(5)


def resolve(spec: str) -> str:
    """`train.device` → `cpu`, `cuda`, `cuda:N` or `mps`; `auto` = CUDA if there is a GPU, else MPS, else the CPU.
    A device torch does not see is one line saying what it sees."""
    spec = str(spec)
    kind, _, index = spec.partition(":")
    if spec == "auto":
        return "cuda" if seen().gpus else "mps" if seen().mps else "cpu"
    if kind not in TYPES or (index and not (kind == "cuda" and index.isdigit())):
        raise UserError(f"train.device={spec} is not a device; use auto, cpu, cuda, cuda:N or mps")
    if kind == "cuda" and len(seen().gpus) <= int(index or 0):
        what = f"sees {len(seen().gpus)} GPU(s)" if seen().gpus else "has no CUDA / sees no GPU"
        raise UserError(f"train.device={spec}, but this torch ({torch.__version__}) {what}: "
                        "use train.device=cpu or auto")  # fmt: skip
    if kind == "mps" and not seen().mps:
        raise UserError(f"train.device=mps, but this torch ({torch.__version__}) has no MPS (Apple GPU): "
                        "use train.device=cpu or auto")  # fmt: skip
    return spec


def check(cfg: DictConfig) -> str:
    """The training device of `cfg` (resolved) after checking every knob of this module: one line for a bad one."""
    if cfg.train.precision not in PRECISIONS:
        raise UserError(f"train.precision={cfg.train.precision} is not an option; use fp32, bf16 or fp16")
    if not isinstance(cfg.dataset.workers, int) or cfg.dataset.workers < 0:
        raise UserError(f"dataset.workers={cfg.dataset.workers} must be a whole number ≥ 0 (0: load in the process)")
    if not isinstance(cfg.train.jobs_per_gpu, int) or cfg.train.jobs_per_gpu < 1:
        raise UserError(f"train.jobs_per_gpu={cfg.train.jobs_per_gpu} must be a whole number ≥ 1")
    return resolve(cfg.train.device)


def described(device: str) -> str:
    """The row's `train_device`: `cpu`, `mps`, or `cuda:<the GPU's name>`."""
    kind, _, index = device.partition(":")
    return f"cuda:{seen().gpus[int(index or 0)]}" if kind == "cuda" else kind


def train_key(cfg: DictConfig) -> dict:
    """The `train` config as it determines numbers: the device's type instead of its spec (which GPU and how many
    jobs share it do not change a result)."""
    spec = plain(cfg.train)
    spec.pop("jobs_per_gpu")
    return spec | {"device": resolve(spec["device"]).partition(":")[0]}


def gpu_ids(cfg: DictConfig) -> list[str]:
    """The GPUs a stage of `cfg` may take (ids as CUDA_VISIBLE_DEVICES names them); [] when it trains elsewhere."""
    device = resolve(cfg.train.device)
    kind, _, index = device.partition(":")
    if kind != "cuda":
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")] if visible else [str(i) for i in range(len(seen().gpus))]
    ids = ids[: len(seen().gpus)]
    return [ids[int(index)]] if index else ids


@dataclass(frozen=True)
class Training:
    """This process's training settings (see the module docstring)."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    workers: int = 0

    def autocast(self) -> AbstractContextManager:
        """Autocast to the precision's dtype on the device (disabled in fp32: the plain fp32 arithmetic)."""
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

    def scaler(self) -> torch.amp.GradScaler:
        """fp16 gradients scaled against underflow; in fp32 and bf16 a pass-through."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"


_current = Training()


def current() -> Training:
    return _current


def use(cfg: DictConfig) -> None:
    """In a stage's child: train on `train.device` (a CUDA stage holds one GPU, made the only visible one by its
    slot, compress/machine.py), in `train.precision`, loading with `dataset.workers`; `train.deterministic`."""
    global _current
    kind = resolve(cfg.train.device).partition(":")[0]
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts: cuBLAS's reproducible mode
    torch.use_deterministic_algorithms(bool(cfg.train.deterministic))
    torch.backends.cudnn.deterministic = bool(cfg.train.deterministic)
    torch.backends.cudnn.benchmark = not cfg.train.deterministic
    _current = Training(torch.device(kind), cfg.train.precision, cfg.dataset.workers)
