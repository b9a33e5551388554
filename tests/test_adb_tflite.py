""".tflite files on the phone with LiteRT's benchmark_model: its output and failures parsed from the real program's
exact texts (tflite/tools/benchmark/benchmark_model.cc, benchmark_tflite_model.cc, tflite/tools/logging.h,
tflite/tools/command_line_flags.cc), its flags, the stand-in on the emulated phone, AdbDevice timing .tflite files
beside .pte ones."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch
from adb_emulator.harness import adb_device
from adb_emulator.phone import make_fake_benchmark_model, make_fake_executor_runner
from conftest import cli

from adb_bench.benchmark_model import BenchmarkModel, failure
from adb_bench.errors import DeviceError
from adb_bench.host import in_child
from adb_bench.parse import GarbledOutput, parse_benchmark_model
from adb_bench.session import Run
from adb_bench.transport import Adb, ShellResult, sha256_of
from compress.formats.tflite import export_tflite

SHAPE = [1, 1, 8, 8]
REMOTE = "/data/local/tmp/pocketbench"
BINARY = f"{REMOTE}/benchmark_model"
MODEL = f"{REMOTE}/run-5f1c0a9e2b7d/0-model.tflite"
PARAMS = "\n".join([
    "INFO: STARTING!",
    "INFO: Log parameter values verbosely: [0]",
    "INFO: Min num runs: [4]",
    "INFO: Min runs duration (seconds): [0]",
    "INFO: Num threads: [2]",
    "INFO: Min warmup runs: [1]",
    "INFO: Min warmup runs duration (seconds): [0]",
    f"INFO: Graph: [{MODEL}]",
    "INFO: Signature to run: []",
    "INFO: #threads used for CPU inference: [2]",
    "INFO: Use xnnpack: [1]",
]) + "\n"  # fmt: skip
OK = PARAMS + "\n".join([
    f"INFO: Loaded model {MODEL}",
    "INFO: Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate.",
    "INFO: The input model file size (MB): 0.003656",
    "INFO: Initialized session in 2.871ms.",
    "INFO: Running benchmark for at least 1 iterations and at least 0 seconds but terminate if exceeding 150 seconds.",
    "INFO: count=1 curr=812 p5=812 median=812 p95=812",
    "",
    "INFO: Running benchmark for at least 4 iterations and at least 0 seconds but terminate if exceeding 150 seconds.",
    "INFO: count=4 first=131 curr=118 min=117 max=131 avg=121.5 std=5 p5=117 median=118 p95=131",
    "",
    "INFO: Inference timings in us: Init: 2871, First inference: 812, Warmup (avg): 812, Inference (avg): 121.5",
    "INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the "
    "actual memory footprint of the model at runtime. Take the information at your discretion.",
    "INFO: Memory footprint delta from the start of the tool (MB): init=3.05469 overall=3.30859",
]) + "\n"  # fmt: skip
RUNTIME = "INFO: Initialized TensorFlow Lite runtime.\nINFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
FAILED = "ERROR: Benchmarking failed.\n"
USAGE = (f"ERROR: usage: {BINARY} <flags>\nFlags:\n\t--num_runs=50   \tint32\toptional\texpected number of runs, see "
         "also min_secs, max_secs\n\t--min_secs=1    \tfloat\toptional\tminimum number of seconds to rerun for, "
         "potentially making the actual number of runs to be greater than num_runs\n\n")  # fmt: skip
MISSING_OP = ("ERROR: Didn't find op for builtin opcode 'STABLEHLO_COMPOSITE' version '1'. An older version of this "
              "builtin might be supported. Are you using an old TFLite binary with a newer model?\n\nERROR: "
              "Registration failed.\n\nERROR: Failed to initialize the interpreter\n")  # fmt: skip


def run(code: int, out: str, err: str) -> Run:
    return Run(ShellResult(code, out, err), "", BINARY, REMOTE, 1)


def test_a_run_is_one_sample_the_mean_of_its_timed_runs_with_its_threads():
    timings = parse_benchmark_model(OK)
    assert (timings.samples_us, timings.source, timings.threads) == ([121.5], "summary", 2)
    assert BenchmarkModel().timings(run(0, OK, RUNTIME)).samples_us == [121.5]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("INFO: count=3 first=90 curr=80 min=80 max=95 avg=88.3333 std=6\n\n", 88.3333),  # a build without percentiles
        ("INFO: count=1 curr=812 p5=812 median=812 p95=812\n\nINFO: count=5 curr=40(all same) p5=40 median=40 p95=40\n",
         40.0),  # all timed runs alike: curr, not the warm-up's line
        ("INFO: Inference timings in us: Init: 3, First inference: 4, Warmup (avg): 5, Inference (avg): 1.23457e+06\n",
         1.23457e6),  # a double printed by ostream
        ("Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9\n", 79760.9),  # old builds
    ],
    ids=["no-percentiles", "all-same", "exponent", "old-summary"],
)  # fmt: skip
def test_the_mean_is_read_from_every_form_the_tool_prints(text, expected):
    assert parse_benchmark_model(text).samples_us == [pytest.approx(expected)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (PARAMS + "INFO: count=0 p5=0 median=0 p95=0\n\nINFO: Inference timings in us: Init: 2871, First inference: 0, "
         "Warmup (avg): 0, Inference (avg): 0\n", r"benchmark_model ran no timed run \(count=0\)"),
        (PARAMS, r"no latency in benchmark_model output \(no 'Inference timings in us' line, no count= line\): INFO: "
                 r"Use xnnpack: \[1\]"),
    ],
    ids=["count-0", "no-timings"],
)  # fmt: skip
def test_output_without_a_timed_run_says_why(text, expected):
    with pytest.raises(GarbledOutput, match=f"^{expected}"):
        parse_benchmark_model(text)


@pytest.mark.parametrize(
    ("code", "out", "err", "expected"),
    [
        (1, "INFO: STARTING!\n", "ERROR: Failed to parse flag 'num_runs' against argv '--num_runs=abc'\n" + USAGE
         + FAILED, "benchmark_model could not read --num_runs=abc (flag num_runs): fix it in device.tflite_args"),
        (1, "INFO: STARTING!\n", "ERROR: Please specify the name of your TF Lite input file with --graph\n" + FAILED,
         "benchmark_model got no --graph: check device.tflite_args (--name=value, no bare values)"),
        (1, PARAMS, f"ERROR: Could not open '{MODEL}'.\nERROR: The model allocation is null/empty\nERROR: Failed to "
         f"load model {MODEL}\n" + FAILED, f"benchmark_model stopped: Could not open '{MODEL}'. (Failed to load model "
         f"{MODEL}); the model is missing on the phone: rerun (it is pushed again) or check device.remote_dir"),
        (1, PARAMS, f"ERROR: The model is not a valid Flatbuffer buffer\nERROR: Failed to load model {MODEL}\n"
         + FAILED, f"benchmark_model stopped: The model is not a valid Flatbuffer buffer (Failed to load model "
         f"{MODEL}); the file is not a .tflite this binary reads: delete its cache entry if it is damaged"),
        (1, PARAMS + f"INFO: Loaded model {MODEL}\n", MISSING_OP
         + FAILED, "benchmark_model stopped: Didn't find op for builtin opcode 'STABLEHLO_COMPOSITE' version '1'. An "
         "older version of this builtin might be supported. Are you using an old TFLite binary with a newer model? "
         "(Failed to initialize the interpreter); this benchmark_model is older than the converter that wrote the file "
         "(STABLEHLO_COMPOSITE version 1): use a newer one (LiteRT's nightly build, README)"),
        (1, PARAMS + f"INFO: Loaded model {MODEL}\n", RUNTIME + "ERROR: Failed to apply XNNPACK delegate.\n" + FAILED,
         "benchmark_model stopped: Failed to apply XNNPACK delegate.; the XNNPACK delegate cannot take this model: add "
         "--use_xnnpack=false to device.tflite_args to time it without"),
        (139, PARAMS, "Segmentation fault\n", "benchmark_model crashed (Segmentation fault, exit 139)"),
        (1, "", f'CANNOT LINK EXECUTABLE "{BINARY}": library "libc++_shared.so" not found: needed by main executable\n',
         "benchmark_model needs libc++_shared.so, which the phone does not have: add "
         "device.push_libs=[/path/to/libc++_shared.so] (the one from the NDK that built it)"),
    ],
    ids=["bad-value", "no-graph", "missing-file", "not-flatbuffer", "missing-op", "delegate", "segv", "no-stl"],
)  # fmt: skip
def test_every_failure_is_one_line_naming_its_cause(code, out, err, expected):
    assert failure(run(code, out, err)) == expected
    with pytest.raises(DeviceError, match=f"^{re.escape(expected)}$"):
        BenchmarkModel().timings(run(code, out, err))


def test_a_flag_the_build_does_not_know_fails_the_run_though_the_tool_ignores_it():
    out = OK.replace("INFO: Loaded", "WARN: Unconsumed cmdline flags: --use_gpu=true\nINFO: Loaded")
    with pytest.raises(DeviceError, match=r"^benchmark_model ignored --use_gpu=true \(Unconsumed cmdline flags: this "
                                          r"build has no such flag\): remove it from device.tflite_args$"):  # fmt: skip
        BenchmarkModel().timings(run(0, out, RUNTIME))


def test_flags_run_exactly_warmup_and_iters_with_xnnpack_on_the_configured_threads():
    assert BenchmarkModel().flags("/d/m.tflite", SHAPE, 2, 7) == [
        "--graph=/d/m.tflite", "--warmup_runs=2", "--warmup_min_secs=0", "--num_runs=7", "--min_secs=0",
        "--use_xnnpack=true"]  # fmt: skip
    flags = BenchmarkModel(threads=4, extra_args=["--use_caching=true"]).flags("/d/m.tflite", SHAPE, 0, 5)
    assert flags[1] == "--num_threads=4" and flags[-1] == "--use_caching=true"
    assert BenchmarkModel().trace_flags("/d/0.etdp") is None


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(1, 2, 3), torch.nn.Linear(72, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def tflite(tmp_path_factory):
    """A tiny conv net converted by litert-torch (float, batch 1), as export=tflite writes it; in a forked child, as
    the pipeline converts (a process that converted cannot fork another converter: tests/test_tflite.py)."""
    path = tmp_path_factory.mktemp("tflite") / "m.tflite"

    def convert() -> None:
        torch.set_num_threads(1)  # this process's OpenMP pool is not the child's
        export_tflite(TinyNet().eval(), torch.randn(*SHAPE), path)

    in_child(convert)
    return path


@pytest.fixture(scope="module")
def tflite_runner(tmp_path_factory):
    return make_fake_benchmark_model(tmp_path_factory.mktemp("bin") / "benchmark_model")


def by_hand(server, phone, tflite, *flags: str):
    """benchmark_model run by hand on the phone (its stand-in and the model put there directly)."""
    make_fake_benchmark_model(phone.local("/data/local/tmp/benchmark_model"))
    phone.local("/data/local/tmp/m.tflite").write_bytes(tflite.read_bytes())
    phone.local("/data/local/tmp/bad.tflite").write_bytes(b"\0" * 64)
    return Adb("adb", phone.serial, port=server.port).shell(["/data/local/tmp/benchmark_model", *flags])


def test_the_stand_in_prints_the_real_texts_on_their_streams(server, phone, tflite):
    result = by_hand(server, phone, tflite, "--graph=/data/local/tmp/m.tflite", "--num_threads=1", "--warmup_runs=1",
                     "--warmup_min_secs=0", "--num_runs=3", "--min_secs=0", "--use_xnnpack=true")  # fmt: skip
    assert result.code == 0 and result.err == RUNTIME
    lines = result.out.splitlines()
    assert lines[:3] == ["INFO: STARTING!", "INFO: Log parameter values verbosely: [0]", "INFO: Min num runs: [3]"]
    assert "INFO: Graph: [/data/local/tmp/m.tflite]" in lines and "INFO: Use xnnpack: [1]" in lines
    assert "INFO: Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the " \
           "delegate." in lines  # fmt: skip
    counts = [line for line in lines if line.startswith("INFO: count=")]
    assert [c.split()[1] for c in counts] == ["count=1", "count=3"] and lines[lines.index(counts[1]) + 1] == ""
    assert re.fullmatch(r"INFO: count=3 first=\d+ curr=\d+ min=\d+ max=\d+ avg=[\d.e+]+ std=\d+ p5=\d+ median=\d+ "
                        r"p95=\d+|INFO: count=3 curr=\d+\(all same\) p5=\d+ median=\d+ p95=\d+", counts[1])  # fmt: skip
    timings = parse_benchmark_model(result.out)
    assert timings.threads == 1 and 0 < timings.samples_us[0] < 1e6


@pytest.mark.parametrize(
    ("flags", "err"),
    [
        (["--graph=/data/local/tmp/m.tflite", "--num_runs=abc"],
         r"ERROR: Failed to parse flag 'num_runs' against argv '--num_runs=abc'\nERROR: usage: "
         r"/data/local/tmp/benchmark_model <flags>\nFlags:\n\t--num_runs=50 +\tint32\toptional\texpected number of "
         r"runs, see also min_secs, max_secs\n(.*\n)*\nERROR: Benchmarking failed\.\n"),
        (["--num_runs=3"], r"ERROR: Please specify the name of your TF Lite input file with --graph\nERROR: "
                           r"Benchmarking failed\.\n"),
        (["--graph=/data/local/tmp/gone.tflite"], r"ERROR: Could not open '/data/local/tmp/gone.tflite'\.\nERROR: "
         r"The model allocation is null/empty\nERROR: Failed to load model /data/local/tmp/gone.tflite\nERROR: "
         r"Benchmarking failed\.\n"),
        (["--graph=/data/local/tmp/bad.tflite"], r"ERROR: The model is not a valid Flatbuffer buffer\nERROR: Failed to "
         r"load model /data/local/tmp/bad.tflite\nERROR: Benchmarking failed\.\n"),
    ],
    ids=["bad-value", "no-graph", "missing", "not-flatbuffer"],
)  # fmt: skip
def test_the_stand_in_fails_like_the_tool(server, phone, tflite, flags, err):
    result = by_hand(server, phone, tflite, *flags)
    assert result.code == 1 and result.out.startswith("INFO: STARTING!\n") and re.fullmatch(err, result.err)
    assert failure(Run(result, "", "/data/local/tmp/benchmark_model", "/data/local/tmp", 1)).startswith(
        "benchmark_model ")


def test_an_unknown_flag_is_only_a_warning_for_the_tool(server, phone, tflite):
    result = by_hand(server, phone, tflite, "--graph=/data/local/tmp/m.tflite", "--use_gpu=true", "--num_runs=2")
    assert result.code == 0 and "WARN: Unconsumed cmdline flags: --use_gpu=true\n" in result.out


def test_a_session_times_tflite_and_pte_files_each_with_its_binary(server, phone, tflite_runner, tflite, tmp_path):
    """One session: the .tflite with benchmark_model (one sample per run), the .pte with executor_runner; each binary
    pushed once and in the identity."""
    from compress.formats.pte import export_pte

    pte = tmp_path / "m.pte"
    export_pte(TinyNet().eval(), torch.randn(*SHAPE), pte, "xnnpack")
    et_runner = make_fake_executor_runner(tmp_path / "executor_runner")
    device = adb_device(server, phone, None, et_runner=str(et_runner), tflite_runner=str(tflite_runner), threads=1,
                        warmup=2, iters=6, rounds=3)  # fmt: skip
    first, second = device.benchmark([str(tflite), str(pte)], SHAPE)
    runs = [c for c in phone.commands if "--graph=" in c]
    assert len(runs) == 3 and all("--num_threads=1 --warmup_runs=2 --warmup_min_secs=0 --num_runs=2 --min_secs=0 "
                                  "--use_xnnpack=true" in c for c in runs)  # fmt: skip
    assert (first["latency_source"], first["threads"], first["round_sizes"]) == ("summary", 1, [1, 1, 1])
    assert len(first["samples_ms"]) == 3 and min(first["samples_ms"]) > 0 and first["qengine"] is None
    assert (second["latency_source"], len(second["samples_ms"])) == ("log", 6)
    identity = device.identity()
    assert identity["tflite_runner_sha256"] == sha256_of(tflite_runner) and identity["tflite_args"] == []
    assert sum(c.startswith("chmod") for c in phone.commands) == 2  # each binary pushed once


def test_a_tflite_file_without_its_runner_says_which_setting(server, phone, tflite, tmp_path):
    et_runner = make_fake_executor_runner(tmp_path / "executor_runner")
    with pytest.raises(DeviceError, match=r"^device.tflite_runner is not set: point it at benchmark_model for the "
                                          r"phone to time .tflite files; download LiteRT's nightly"):  # fmt: skip
        adb_device(server, phone, None, et_runner=str(et_runner)).benchmark([str(tflite)], SHAPE)


@pytest.mark.slow
def test_cli_sweep_times_tflite_files_on_the_phone_for_float_pruned_and_int8(server, phone, tmp_path, cache_dir):
    """`export=tflite device=adb` over none, prune_channel and quant_static on LeNet-5: ok rows, latency from the
    stand-in's runs (one sample per run), the pruned and the int8 file smaller, each run with XNNPACK on the
    configured threads."""
    runner = make_fake_benchmark_model(tmp_path / "benchmark_model")
    device = ["device=adb", f"device.tflite_runner={runner}", f"device.serial={phone.serial}",
              f"device.server_port={server.port}", "device.warmup=1", "device.iters=4", "device.rounds=2",
              "device.threads=1", f"device.lock_dir={tmp_path / 'locks'}"]  # fmt: skip
    sweep = tmp_path / "sweep"
    done = cli("-m", "export=tflite", "technique=none,prune_channel,quant_static", "model=lenet5", "train.epochs=1",
               "finetune.epochs=0", "dataset.limit_train=512", "dataset.limit_test=128", *device,
               f"cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}", timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(sweep / "summary.csv").set_index("technique")
    assert list(table["status"]) == ["ok", "ok", "ok"] and (table["format"] == "tflite").all()
    assert (table["latency_source"] == "summary").all() and (table["threads"] == 1).all()
    assert (table["latency_ms_p50"] > 0).all() and (table["acc_top1"] > 0).all()
    assert table.loc["none", "size_bytes"] >= 3 * table.loc["quant_static", "size_bytes"]
    assert table.loc["none", "size_bytes"] >= 2.5 * table.loc["prune_channel", "size_bytes"]  # 3.6× on the host
    assert table.loc["prune_channel", "macs_reduction_x"] > 2  # the file the phone ran is the pruned one
    runs = [c for c in phone.commands if "--graph=" in c]
    flags = r"--graph=\S+\.tflite --num_threads=1 --warmup_runs=1 --warmup_min_secs=0 --num_runs=2 --min_secs=0 "
    assert len(runs) >= 6 and all(re.search(flags + "--use_xnnpack=true", c) for c in runs)
