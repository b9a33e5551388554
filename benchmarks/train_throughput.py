"""Training throughput (samples/s) of pocketbench's fit against a plain hand-written PyTorch loop: the same model,
data, batch size, optimizer, precision, device and loader workers. pocketbench should add nothing (goal ≥ 0.9).

    python benchmarks/train_throughput.py model=resnet20 dataset=fake dataset.n_train=2048 train.epochs=1 \
        dataset.workers=2 train.precision=bf16 [train.device=cuda]

Any override of the main config applies (composed like `python cli.py`). A benchmark, not a test: its numbers move
with the machine and its load. Prints one line: both rates (the best of two
interleaved runs each, after a warm-up run) and their ratio.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compress import accel  # noqa: E402
from compress.config import build  # noqa: E402
from compress.data import make_loader  # noqa: E402
from compress.train import Recipe, fit  # noqa: E402


def plain_loop(model: torch.nn.Module, cfg, data, training: accel.Training) -> None:
    """What a user would write by hand: SGD (Nesterov), cosine schedule, autocast, the scaler in fp16."""
    loader = make_loader(data, cfg.train.batch_size, shuffle=True, seed=cfg.seed, workers=training.workers,
                         pin_memory=training.pin_memory)  # fmt: skip
    model.to(training.device).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum,
                          weight_decay=cfg.train.weight_decay, nesterov=True)  # fmt: skip
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.train.epochs * len(loader))
    scaler = torch.amp.GradScaler(training.device.type, enabled=training.precision == "fp16")
    for _ in range(cfg.train.epochs):
        for x, y in loader:
            x, y = x.to(training.device, non_blocking=True), y.to(training.device, non_blocking=True)
            with torch.autocast(training.device.type, dtype=accel.PRECISIONS[training.precision] or torch.float32,
                                enabled=training.precision != "fp32"):  # fmt: skip
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
    model.cpu()


def rate(train, cfg, data) -> float:
    torch.manual_seed(cfg.seed)
    model = build(cfg.model)
    if accel.current().device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train(model)
    return cfg.train.epochs * len(data) / (time.perf_counter() - start)


def main(overrides: list[str]) -> None:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides)
    torch.set_num_threads(cfg.threads)
    accel.use(cfg)
    data = build(cfg.dataset).train
    ours = lambda m: fit(m, data, Recipe.of(cfg.train), cfg.seed)  # noqa: E731
    hand = lambda m: plain_loop(m, cfg, data, accel.current())  # noqa: E731
    rate(hand, cfg, data)  # warm-up: allocator, kernels, the page cache
    rates = {"pocketbench": 0.0, "plain": 0.0}
    for _ in range(2):  # interleaved, the best of each: a busy machine slows one run, not a loop
        rates = {name: max(rates[name], rate(train, cfg, data)) for name, train in (("pocketbench", ours),
                                                                                     ("plain", hand))}
    print(f"{cfg.model.name} {cfg.train.device}->{accel.current().device} {cfg.train.precision} "
          f"workers={cfg.dataset.workers} threads={cfg.threads}: pocketbench {rates['pocketbench']:.0f} samples/s, "
          f"plain loop {rates['plain']:.0f} samples/s, ratio {rates['pocketbench'] / rates['plain']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
