""".pte files on the phone with ExecuTorch's executor_runner: its log lines and failures parsed from the exact texts
(logcat's threadtime format, a host build's prefixes), the emulated phone's logcat and the runner stand-in, AdbDevice
timing .pte (and .ptl) files, and a `device=adb export=pte` sweep from the CLI with a failed row."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import torch
from adb_emulator.harness import adb_device
from adb_emulator.phone import make_fake_binary, make_fake_executor_runner
from conftest import cli
from test_adb_pipeline import SMALL

from adb_bench.adb import AdbDevice
from adb_bench.errors import DeviceError
from adb_bench.executor_runner import ExecutorRunner, failure
from adb_bench.parse import GarbledOutput, log_messages, parse_executor_runner
from adb_bench.session import Run
from adb_bench.transport import Adb, ShellResult, sha256_of
from compress.formats.pte import export_pte
from compress.formats.ptl import export_ptl

SHAPE = [1, 1, 8, 8]
REMOTE = "/data/local/tmp/pocketbench"
BINARY = f"{REMOTE}/executor_runner"
MODEL = f"{REMOTE}/run-5f1c0a9e2b7d/0-model.pte"
AT = "05-14 10:22:31.{:03d}  4321  4321 "  # logcat's threadtime prefix: date time pid tid
RUN = "\n".join([
    "--------- beginning of main",
    AT.format(101) + "I ExecuTorch: Resetting threadpool with num threads = 4",
    AT.format(102) + f"I ExecuTorch: Model file {MODEL} is loaded.",
    AT.format(102) + "I ExecuTorch: Using method forward",
    AT.format(103) + "I ExecuTorch: Model loaded in 0.088832 ms.",
    AT.format(104) + "I ExecuTorch: Iteration 1 of 4: 1.444923 ms",
    AT.format(105) + "I ExecuTorch: Iteration 2 of 4: 0.021000 ms",
    AT.format(105) + "I ExecuTorch: Iteration 3 of 4: 0.020500 ms",
    AT.format(106) + "I ExecuTorch: Iteration 4 of 4: 0.019750 ms",
    AT.format(106) + "I ExecuTorch: Model executed successfully 4 time(s) in 1.506173 ms.",
    AT.format(106) + "I ExecuTorch: 1 outputs: ",
]) + "\n"  # fmt: skip
HOST = "I 00:00:00.{:06d} executorch:executor_runner.cpp:779] "  # a host build's prefix, on stderr
NO_XNNPACK = ("executor_runner stopped: Backend XnnpackBackend is not registered. (Loading of method forward failed "
              "with status 0x20); rebuild the runner with -DEXECUTORCH_BUILD_XNNPACK=ON (README: Benchmark on your "
              "phone)")  # fmt: skip
REBUILD = ("build it with the NDK from the ExecuTorch release that matches pip show executorch (README: Benchmark on "
           "your phone)")  # fmt: skip


def messages(text: str) -> list[str]:
    return [message for _, message in log_messages(text)]


def test_iteration_lines_after_the_warmup_are_the_samples_never_the_total():
    timings = parse_executor_runner(messages(RUN), warmup=1)
    assert timings.samples_us == pytest.approx([21.0, 20.5, 19.75]) and timings.source == "log"
    assert timings.threads == 4  # `Resetting threadpool with num threads = 4`
    host = "".join(HOST.format(2332 + i) + line.split("ExecuTorch: ", 1)[1] + "\n" for i, line in
                   enumerate(RUN.splitlines()[2:]))  # the same run from a host build, without the pool line
    assert parse_executor_runner(messages(host), warmup=2).samples_us == pytest.approx([20.5, 19.75])
    assert parse_executor_runner(messages(host), warmup=2).threads is None


def test_log_lines_lose_their_prefix_and_keep_their_level():
    text = (AT.format(1) + "E ExecuTorch: Program identifier 'XX99' != expected 'ET12'\n"
            + AT.format(2) + "F libc    : Fatal signal 6 (SIGABRT), code -1 (SI_QUEUE) in tid 4321 (executor_runner)\n"
            + HOST.format(2332) + "Model loaded in 0.088832 ms.\n--------- beginning of crash\n"
            + "ERROR: unknown command line flag 'bogus'\n")  # fmt: skip
    assert log_messages(text) == [
        ("E", "Program identifier 'XX99' != expected 'ET12'"),
        ("F", "Fatal signal 6 (SIGABRT), code -1 (SI_QUEUE) in tid 4321 (executor_runner)"),
        ("I", "Model loaded in 0.088832 ms."), ("", "ERROR: unknown command line flag 'bogus'"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], r"no latency from executor_runner: logcat holds no 'Iteration i of N' line under tag ExecuTorch \(a "
             r"build without -DEXECUTORCH_ENABLE_LOGGING=ON logs nothing; adb shell getprop log.tag.ExecuTorch must "
             r"be empty or V, D or I\)"),
        ([1, 9, 10], r"executor_runner logged only its total \(Model executed successfully 4 time\(s\) in "
                     r"1.506173 ms.: all runs, warm-up included\), no 'Iteration i of N' line: build it from the "
                     r"ExecuTorch release that matches pip show executorch"),
        ([1, 5, 6, 8], r"logcat kept 2 of the 3 timed 'Iteration i of 4' lines of executor_runner \(its buffer "
                       r"overflowed\): enlarge it with adb logcat -G 16M or lower device.iters"),
    ],
    ids=["no-log", "total-only", "lines-lost"],
)  # fmt: skip
def test_a_log_without_every_timed_iteration_is_one_line_saying_why(lines, expected):
    kept = "\n".join(RUN.splitlines()[i] for i in lines)  # 5-8: Iteration 1-4
    with pytest.raises(GarbledOutput, match=f"^{expected}$"):
        parse_executor_runner(messages(kept), warmup=1)


def logcat(*lines: str) -> str:
    return "--------- beginning of main\n" + "".join(AT.format(i) + line + "\n" for i, line in enumerate(lines))


@pytest.mark.parametrize(
    ("code", "err", "log", "expected"),
    [
        (1, "ERROR: unknown command line flag 'cpu_threads'\n", "",
         f"executor_runner has no flag --cpu_threads: {REBUILD}"),
        (1, "", logcat("I ExecuTorch: Resetting threadpool with num threads = 4",
                       "E ExecuTorch: Program identifier 'XX99' != expected 'ET12'",
                       f"E ExecuTorch: Failed to parse model file {MODEL}"),
         f"executor_runner stopped: Program identifier 'XX99' != expected 'ET12' (Failed to parse model file {MODEL}); "
         "the file is not an ExecuTorch program this runner reads: build the runner from the ExecuTorch release that "
         "wrote it (pip show executorch), or delete the file's cache entry if it is damaged"),
        (134, "", logcat(f"E ExecuTorch: Failed to open {MODEL}: No such file or directory (2)",
                         "F ExecuTorch: In function main(), assert failed (file_loader.ok()): FileDataLoader::from() "
                         "failed: 0x22"),
         f"executor_runner stopped: Failed to open {MODEL}: No such file or directory (2) (FileDataLoader::from() "
         "failed: 0x22); the model is missing on the phone: rerun (it is pushed again) or check device.remote_dir"),
        (134, "", logcat(f"I ExecuTorch: Model file {MODEL} is loaded.", "I ExecuTorch: Using method forward",
                         "E ExecuTorch: Backend XnnpackBackend is not registered.",
                         "F ExecuTorch: In function main(), assert failed (method.ok()): Loading of method forward "
                         "failed with status 0x20"), NO_XNNPACK),
        (134, "", logcat("E ExecuTorch: Missing operator: [0] aten::cumsum.out",
                         "F ExecuTorch: In function main(), assert failed (method.ok()): Loading of method forward "
                         "failed with status 0x14"),
         "executor_runner stopped: Missing operator: [0] aten::cumsum.out (Loading of method forward failed with "
         "status 0x14)"),
        (134, "", "", "executor_runner crashed (Aborted, exit 134)"),
        (139, "Segmentation fault\n", logcat("I ExecuTorch: Iteration 1 of 11: 1.444923 ms"),
         "executor_runner crashed (Segmentation fault, exit 139)"),
        (1, "", logcat("E ExecuTorch: Extra commandline args: model.pte"),
         "executor_runner exited with 1: Extra commandline args: model.pte"),
        (126, f"/system/bin/sh: {BINARY}: not executable: 64-bit ELF file\n", "",
         f"executor_runner is built for another CPU (/system/bin/sh: {BINARY}: not executable: 64-bit ELF file): "
         "rebuild it with ANDROID_ABI = the phone's device_abi"),
        (1, f'CANNOT LINK EXECUTABLE "{BINARY}": library "libc++_shared.so" not found: needed by main executable\n',
         "", "executor_runner needs libc++_shared.so, which the phone does not have: add "
         "device.push_libs=[/path/to/libc++_shared.so] (the one from the NDK that built it)"),
    ],
    ids=["unknown-flag", "bad-magic", "missing-file", "no-xnnpack", "missing-op", "abort-no-log", "segv", "extra-arg",
         "wrong-abi", "no-stl"],
)  # fmt: skip
def test_every_runner_failure_is_one_line_naming_its_cause(code, err, log, expected):
    assert failure(Run(ShellResult(code, "", err), log, BINARY, REMOTE, 1)) == expected


def test_flags_time_warmup_plus_iters_on_the_configured_threads():
    assert ExecutorRunner().flags("/d/m.pte", [1, 1, 28, 28], 2, 7) == [
        "--model_path=/d/m.pte", "--num_executions=9", "--cpu_threads=-1", "--print_output=none"]
    assert ExecutorRunner(threads=4).flags("/d/m.pte", [1, 1, 28, 28], 0, 5)[1:3] == [
        "--num_executions=5", "--cpu_threads=4"]
    for threads in (0, "4"):
        with pytest.raises(DeviceError, match=rf"^device.threads={threads!r}: give executor_runner a thread count"):
            AdbDevice(threads=threads)


def tiny_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(72, 3))


@pytest.fixture(scope="module")
def pte(tmp_path_factory):
    """A tiny conv net lowered to XNNPACK, as export=pte writes it."""
    path = tmp_path_factory.mktemp("pte") / "m.pte"
    export_pte(tiny_net(), torch.randn(*SHAPE), path, "xnnpack")
    return path


@pytest.fixture(scope="module")
def et_runner(tmp_path_factory):
    return make_fake_executor_runner(tmp_path_factory.mktemp("bin") / "executor_runner")


def logged(phone) -> list[dict]:
    """The emulated phone's log entries (what logcat -d shows unfiltered)."""
    return [json.loads(line) for line in (phone.root / "logcat.jsonl").read_text().splitlines()]


def in_order(patterns: list[str], found: list[str]) -> bool:
    """Every pattern fully matches one of `found`, in this order (other lines may come between)."""
    lines = iter(found)
    return all(any(re.fullmatch(p, line) for line in lines) for p in patterns)


THREADTIME = r"\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} +(\d+) +\1 ([IEF]) ExecuTorch: (.*)"


@pytest.mark.parametrize(
    ("runner", "model", "code", "err", "said"),
    [
        ({}, "m.pte", 0, "", [r"Resetting threadpool with num threads = 2", r"Model file /data/local/tmp/m.pte is "
         r"loaded\.", "Using method forward", r"Model loaded in \d+\.\d{6} ms\.", r"Iteration 1 of 3: \d+\.\d{6} ms",
         r"Iteration 2 of 3: \d+\.\d{6} ms", r"Iteration 3 of 3: \d+\.\d{6} ms",
         r"Model executed successfully 3 time\(s\) in \d+\.\d{6} ms\.", "1 outputs: "]),
        ({}, "bad.pte", 1, "", ["Program identifier 'XX99' != expected 'ET12'",
                                "Failed to parse model file /data/local/tmp/bad.pte"]),
        ({}, "gone.pte", 134, "Aborted\n", [
            r"Failed to open /data/local/tmp/gone.pte: No such file or directory \(2\)",
            r"In function main\(\), assert failed \(file_loader.ok\(\)\): FileDataLoader::from\(\) failed: 0x22"]),
        ({"backends": []}, "m.pte", 134, "Aborted\n", [
            "Using method forward", r"Backend XnnpackBackend is not registered\.",
            r"In function main\(\), assert failed \(method.ok\(\)\): Loading of method forward failed with status "
            r"0x20"]),
        ({"logging": False}, "m.pte", 0, "", []),
    ],
    ids=["ok", "bad-magic", "missing", "no-xnnpack", "no-logging"],
)  # fmt: skip
def test_the_stand_in_logs_the_real_texts_to_logcat_only(server, phone, pte, runner, model, code, err, said):
    """Run by hand: the runner writes nothing on stdout and stderr (after an abort the shell says Aborted), its log
    lines are in logcat in its threadtime format with the run's pid, levels I/E/F; libc reports an abort under its
    own tag, which `-s ExecuTorch:I` filters out."""
    make_fake_executor_runner(phone.local("/data/local/tmp/executor_runner"), **runner)
    phone.local("/data/local/tmp/m.pte").write_bytes(pte.read_bytes())
    bad = bytearray(pte.read_bytes())
    bad[4:8] = b"XX99"
    phone.local("/data/local/tmp/bad.pte").write_bytes(bytes(bad))
    adb = Adb("adb", phone.serial, port=server.port)
    adb.check(["logcat", "-c"])
    run = adb.shell(["sh", "-c", '"$@" & echo $! > /data/local/tmp/pid; wait $!', "sh",
                     "/data/local/tmp/executor_runner", f"--model_path=/data/local/tmp/{model}", "--num_executions=3",
                     "--print_output=none"])  # fmt: skip
    pid = int(phone.local("/data/local/tmp/pid").read_text())
    shown = adb.check(["logcat", "-d", f"--pid={pid}", "-s", "ExecuTorch:I"]).splitlines()
    assert (run.code, run.out, run.err) == (code, "", err)
    assert not shown or shown[0] == "--------- beginning of main"
    lines = [re.fullmatch(THREADTIME, line) for line in shown[1:]]
    assert all(lines) and {int(m[1]) for m in lines} <= {pid}
    assert in_order(said, [m[3] for m in lines]) and bool(lines) == bool(said)
    aborts = [e for e in logged(phone) if e["tag"] == "libc"]
    assert [e["message"].split(",")[0] for e in aborts] == (["Fatal signal 6 (SIGABRT)"] if code == 134 else [])


def test_unknown_flags_are_gflags_errors_on_stderr(server, phone, et_runner):
    runner = phone.local("/data/local/tmp/executor_runner")
    runner.write_bytes(et_runner.read_bytes())
    runner.chmod(0o755)
    result = Adb("adb", phone.serial, port=server.port).shell(
        ["/data/local/tmp/executor_runner", "--cpu_threads=two", "--bogus=1", "--model_path", "/no.pte"])
    assert (result.code, result.out) == (1, "") and result.err == (
        "ERROR: unknown command line flag 'bogus'\nERROR: illegal value 'two' specified for int32 flag 'cpu_threads'\n")
    assert not (phone.root / "logcat.jsonl").exists()  # gflags stops it before anything is logged


def test_a_session_times_ptl_and_pte_files_each_with_its_binary(server, phone, et_runner, pte, tmp_path):
    """One session: the .ptl with speed_benchmark_torch, the .pte with executor_runner (warm-up dropped from its
    Iteration lines, pool size from its log), each binary pushed once and in the identity."""
    ptl = tmp_path / "m.ptl"
    export_ptl(tiny_net(), torch.randn(*SHAPE), ptl, optimize=False)
    sbt = make_fake_binary(tmp_path / "speed_benchmark_torch")
    device = adb_device(server, phone, sbt, et_runner=str(et_runner), warmup=2, iters=4, rounds=2)
    first, second = device.benchmark([str(ptl), str(pte)], SHAPE)
    runs = [c for c in phone.commands if "--model" in c]
    assert [("--model=" in c, "--model_path=" in c) for c in runs] == [(1, 0), (0, 1), (0, 1), (1, 0)]
    assert all("--num_executions=4" in c and "--cpu_threads=-1" in c for c in runs if "--model_path=" in c)
    assert sum(c.startswith("logcat -c") for c in phone.commands) == 2  # before each executor_runner run
    assert (first["latency_source"], first["qengine"], first["threads"]) == ("observer", "qnnpack", None)
    assert (second["latency_source"], second["qengine"], second["threads"]) == ("log", None, 2)
    assert len(first["samples_ms"]) == len(second["samples_ms"]) == 4
    last_run = [float(re.fullmatch(r"Iteration (\d) of 4: (.*) ms", e["message"])[2]) for e in logged(phone)
                if e["message"].startswith("Iteration ")]  # the second round's run (logcat is cleared per run)
    assert second["samples_ms"][2:] == pytest.approx(last_run[2:])  # iterations 3 and 4: 1 and 2 dropped
    identity = device.identity()
    assert identity["et_runner_sha256"] == sha256_of(et_runner) and identity["binary_sha256"] == sha256_of(sbt)
    assert sum(c.startswith("chmod") for c in phone.commands) == 2  # each binary pushed once


def test_device_threads_sets_the_pool_and_the_threads_column(server, phone, et_runner, pte):
    [row] = adb_device(server, phone, None, et_runner=str(et_runner), threads=1).benchmark([str(pte)], SHAPE)
    assert row["threads"] == 1 and len(row["samples_ms"]) == 3 and min(row["samples_ms"]) > 0
    assert all("--cpu_threads=1" in c for c in phone.commands if "--model_path=" in c)


@pytest.mark.parametrize(
    ("runner", "expected"),
    [
        ({"backends": []}, f"^{re.escape(NO_XNNPACK)}$"),
        ({"logging": False}, r"^no latency from executor_runner: logcat holds no 'Iteration i of N' line under tag "
                             r"ExecuTorch \(a build without -DEXECUTORCH_ENABLE_LOGGING=ON logs nothing"),
    ],
    ids=["no-xnnpack", "no-logging"],
)  # fmt: skip
def test_a_runner_that_cannot_time_the_file_says_why(server, phone, pte, tmp_path, runner, expected):
    built = make_fake_executor_runner(tmp_path / "executor_runner", **runner)
    with pytest.raises(DeviceError, match=expected):
        adb_device(server, phone, None, et_runner=str(built)).benchmark([str(pte)], SHAPE)


def test_a_file_whose_runner_is_not_configured_says_which_setting(server, phone, pte, tmp_path):
    sbt = make_fake_binary(tmp_path / "speed_benchmark_torch")
    with pytest.raises(DeviceError, match=r"^device.et_runner is not set: point it at executor_runner for the phone to "
                                          r"time .pte files; build it with the NDK"):  # fmt: skip
        adb_device(server, phone, sbt).benchmark([str(pte)], SHAPE)
    with pytest.raises(DeviceError, match=r"^executor_runner not found at '/no/executor_runner': build it .*, set "
                                          r"device.et_runner=PATH$"):  # fmt: skip
        adb_device(server, phone, None, et_runner="/no/executor_runner").attach()
    assert not [c for c in phone.commands if "--model" in c]


@pytest.mark.slow
def test_cli_sweep_times_pte_files_on_the_phone_and_a_broken_runner_is_a_failed_row(server, phone, tmp_path,
                                                                                      cache_dir):  # fmt: skip
    """`export=pte device=adb` over two runners: one times the .pte from logcat, one was built without XNNPACK."""
    for build in ("good", "broken"):
        (tmp_path / build).mkdir()
    good = make_fake_executor_runner(tmp_path / "good" / "executor_runner", performant_cores=1)
    broken = make_fake_executor_runner(tmp_path / "broken" / "executor_runner", backends=[])
    device = ["device=adb", f"device.serial={phone.serial}", f"device.server_port={server.port}", "device.warmup=1",
              "device.iters=3", "device.rounds=1", f"device.lock_dir={tmp_path / 'locks'}"]  # fmt: skip
    sweep = tmp_path / "sweep"
    done = cli("-m", "export=pte", f"device.et_runner={good},{broken}", *SMALL, *device, f"cache_dir={cache_dir}",
               f"hydra.sweep.dir={sweep}", timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]  # a failed row makes the sweep exit non-zero, at the end
    table = pd.read_csv(sweep / "summary.csv")
    assert list(table["status"]) == ["ok", "failed"] and (table["format"] == "pte").all()
    ok, failed = table.iloc[0], table.iloc[1]
    assert ok["latency_ms_p50"] > 0 and ok["threads"] == 1 and ok["latency_source"] == "log"
    assert pd.isna(ok["qengine"]) and ok["device"] == "adb:Pixel Emu" and ok["acc_top1"] > 0
    assert failed["error"] == f"DeviceError: {NO_XNNPACK}"
    runs = [c for c in phone.commands if "--model_path=" in c]
    assert len(runs) == 2 and all(re.search(r"--model_path=\S+\.pte --num_executions=4 ", c) for c in runs)
