"""Units of the foundation: cache, data, training determinism, export fidelity, latency stats."""

from __future__ import annotations

import torch

from adb_bench.host import BLOCK, HostDevice
from compress import cache
from compress.config import build
from compress.formats.ptl import export_ptl, load_ptl
from compress.metrics import count_params, file_sizes
from compress.train import Recipe, evaluate, fit


def test_cache_keys_are_stable_and_sensitive():
    assert cache.key_of({"a": 1, "b": [2]}) == cache.key_of({"b": [2], "a": 1})
    assert cache.key_of({"a": 1}) != cache.key_of({"a": 2})


def test_corrupt_cache_entries_read_as_missing(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"\x80garbage")
    (tmp_path / "x.json").write_text("{not json")
    assert cache.load_state(tmp_path / "x.pt") is None
    assert cache.read_json(tmp_path / "x.json") is None
    cache.save_state(tmp_path / "x.pt", {"w": torch.ones(2)})
    assert torch.equal(cache.load_state(tmp_path / "x.pt")["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_mnist5k_is_the_real_embedded_split(mnist5k):
    assert (len(mnist5k.train), len(mnist5k.test)) == (4000, 1000)
    labels = torch.stack([mnist5k.test[i][1] for i in range(len(mnist5k.test))])
    assert set(labels.tolist()) == set(range(10))
    assert mnist5k.test[0][0].shape == (1, 28, 28)


def test_training_is_deterministic_on_cpu(make_cfg):
    cfg = make_cfg("dataset=fake", "model=mlp")
    data = build(cfg.dataset)
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = fit(build(cfg.model), data.train, Recipe(epochs=2, lr=0.05), seed=3)
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert evaluate(model, data.test)["acc_top1"] > 0.95  # learnable blobs: 1.0 measured, chance is 10%


def test_exported_ptl_matches_the_python_model(lenet, mnist5k, tmp_path):
    batch = torch.stack([mnist5k.test[i][0] for i in range(32)])
    info = export_ptl(lenet, batch[:1], tmp_path / "m.ptl")
    assert info["format"] == "ptl" and isinstance(info["mobile_optimized"], bool)
    exported = load_ptl(tmp_path / "m.ptl")
    with torch.no_grad():
        torch.testing.assert_close(exported(batch), lenet(batch), rtol=1e-4, atol=1e-4)
    assert evaluate(exported, mnist5k.test) == evaluate(lenet, mnist5k.test)
    assert file_sizes(tmp_path / "m.ptl")["size_bytes"] > 4 * count_params(lenet)["params"]


def test_host_benchmark_times_files_interleaved_in_one_session(lenet, tmp_path):
    export_ptl(lenet, torch.zeros(1, 1, 28, 28), tmp_path / "a.ptl")
    export_ptl(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), torch.zeros(1, 1, 28, 28),
               tmp_path / "b.ptl")  # fmt: skip
    files = [str(tmp_path / "a.ptl"), str(tmp_path / "b.ptl")]
    a, b = HostDevice(threads=1, warmup=2, iters=7, rounds=3, min_time_s=0).benchmark(files, [1, 1, 28, 28])
    # per round, blocks of BLOCK runs of each file in turn: both files get the same number of samples, at least
    # their share of `iters` (7 over 3 rounds: 3, 2, 2)
    assert a["round_sizes"] == b["round_sizes"] == [BLOCK] * 3 and len(a["samples_ms"]) == 3 * BLOCK
    assert a["threads"] == b["threads"] == 1 and a["rounds"] == 3
    assert min(b["samples_ms"]) > 0 and sorted(a["samples_ms"])[BLOCK // 2] > sorted(b["samples_ms"])[BLOCK // 2]
    # a time budget keeps timing past `iters`: LeNet-5 runs in well under 10 ms
    (timed,) = HostDevice(warmup=0, iters=1, rounds=1, min_time_s=0.1).benchmark(files[:1], [1, 1, 28, 28])
    assert len(timed["samples_ms"]) > BLOCK and len(timed["samples_ms"]) % BLOCK == 0

