"""Do the host's rounds (processes forked from one that loaded no model) land on the levels that separate fresh
processes land on? Per-round medians of the same files, from one session of `--rounds` forked rounds and from
`--rounds` fresh `python` processes of one round each.

    python benchmarks/host_rounds.py A.pte B.ptl [--rounds 10] [--iters 300] [--threads 1]

Prints, per file and way of starting rounds, the per-round p50s (µs) sorted, and their spread (max/min). A
benchmark, not a test: what it shows depends on the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adb_bench.host import HostDevice  # noqa: E402

SHAPE = [1, 1, 28, 28]


def round_medians(result: dict) -> list[float]:
    """The p50 (µs) of each round of a file's samples."""
    medians, at = [], 0
    for n in result["round_sizes"]:
        medians.append(statistics.median(result["samples_ms"][at : at + n]) * 1e3)
        at += n
    return medians


def one_round(files: list[str], iters: int, threads: int) -> list[float]:
    """One round in a fresh `python`: each file's p50 (µs)."""
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
            "from adb_bench.host import HostDevice; "
            f"r = HostDevice(threads={threads}, iters={iters}, rounds=1, min_time_s=0.2)"
            f".benchmark({files!r}, {SHAPE}); "
            "import statistics; print(json.dumps([statistics.median(x['samples_ms']) * 1e3 for x in r]))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    device = HostDevice(threads=args.threads, iters=args.iters * args.rounds, rounds=args.rounds,
                        min_time_s=0.2 * args.rounds)  # fmt: skip
    forked = [round_medians(r) for r in device.benchmark(args.files, SHAPE)]
    fresh = list(zip(*[one_round(args.files, args.iters, args.threads) for _ in range(args.rounds)], strict=True))
    for name, fork, new in zip(args.files, forked, fresh, strict=True):
        for how, medians in (("forked rounds", fork), ("fresh processes", new)):
            values = sorted(medians)
            print(f"{Path(name).name:>24} {how:>16}: " + " ".join(f"{v:.1f}" for v in values) +
                  f"  (max/min {values[-1] / values[0]:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
