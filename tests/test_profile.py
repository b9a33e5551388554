"""Per-layer profiles of .pte files (device.profile): ExecuTorch's event tracer on the host and through the emulated
phone's executor_runner (dump written on the "phone", pulled, read), the Inspector's operators mapped to LeNet-5's
layers, the reference and a channel-pruned variant side by side, and every failure a one-line note."""

from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest
from adb_emulator.harness import adb_device
from adb_emulator.phone import make_fake_executor_runner
from conftest import cli, fast_host

from adb_bench.host import no_profile
from compress.errors import UserError
from compress.formats.pte import export_pte
from compress.profile import (
    OUTSIDE,
    backend_shares,
    etrecord_of,
    operators,
    per_layer,
    read_dumps,
    side_by_side,
)
from compress.techniques.prune import ChannelPrune

LENET_LAYERS = ["features.0", "features.3", "classifier.1", "classifier.3", "classifier.5"]  # convs and linears
PRUNED = ["features.3", "classifier.1"]  # the layers whose inputs channel pruning halves


@pytest.fixture(scope="module")
def pair(_trained_lenet, mnist5k, tmp_path_factory) -> list:
    """The trained LeNet-5 and its channel-pruned variant (0.5) as .pte files, each with its ETRecord."""
    from conftest import make_context

    folder = tmp_path_factory.mktemp("profile")
    ctx = make_context(mnist5k, _trained_lenet)
    pruned = ChannelPrune().apply(copy.deepcopy(_trained_lenet), 0.5, ctx)
    export_pte(_trained_lenet, ctx.example, folder / "base" / "model.pte")
    export_pte(pruned, ctx.example, folder / "pruned" / "model.pte")
    return [folder / "base" / "model.pte", folder / "pruned" / "model.pte"]


@pytest.fixture(scope="module")
def host_tables(pair, tmp_path_factory) -> list:
    """Both files profiled on the host in one traced process: 100 runs each after 20 of warm-up."""
    folder = tmp_path_factory.mktemp("dumps")
    dumps = fast_host(warmup=20, iters=100).profile([str(p) for p in pair], [1, 1, 28, 28], folder)
    read = read_dumps(pair, dumps, folder)
    return [(pd.read_csv(folder / r["table"]), r) for r in read]


def test_a_lenet_profile_lists_its_layers_and_adds_up_to_the_whole_run(host_tables):
    table, read = host_tables[0]
    assert read["named"] and read["p50_ms"] > 0
    layers = [layer for layer in table["layer"].dropna() if layer]
    assert [layer for layer in dict.fromkeys(layers) if layer in LENET_LAYERS] == LENET_LAYERS  # in execution order
    assert set(table["backend"].dropna()) == {"xnnpack"}  # LeNet-5 is delegated whole
    ops, outside = table[table["op"] != OUTSIDE], table[table["op"] == OUTSIDE].iloc[0]
    assert (ops["runs"] == 100).all() and outside["runs"] == 100  # the 20 warm-up runs are left out
    # The operators and the time outside them (each run's whole time less its operators') add up to the whole run:
    # their trimmed means to within 10% of its median. XNNPACK times in whole microseconds and LeNet-5 runs in tens
    # of them: its operators are 40-100% of a run.
    assert table["share"].sum() == pytest.approx(1.0)
    assert table["trim_mean_ms"].sum() == pytest.approx(read["p50_ms"], rel=0.1)
    assert 0.4 <= ops["share"].sum() <= 1.0


def test_the_pruned_layers_time_shrinks_beside_the_reference(host_tables):
    both = side_by_side(host_tables[0][0], host_tables[1][0])
    layers = per_layer(both).set_index("layer")
    # Half the channels: conv 2 and the first linear layer take half the inputs (conv 2 also makes half the
    # outputs: ~4× fewer MACs). Conv 1 makes 3 maps instead of 6 but is not timed faster: XNNPACK computes output
    # channels in tiles (the kind of finding the profile is for), so it is not asserted.
    pruned = layers.loc[PRUNED]
    assert pruned.loc["features.3", "variant_ms"] < 0.75 * pruned.loc["features.3", "base_ms"]
    assert pruned["variant_ms"].sum() < 0.8 * pruned["base_ms"].sum()
    assert list(both.columns[:3]) == ["layer", "op", "backend"]
    assert layers.index[-1] == OUTSIDE


def test_side_by_side_matches_layers_and_keeps_the_ones_a_technique_removed():
    def table(rows):
        out = pd.DataFrame(rows, columns=["layer", "op", "backend", "runs", "p50_ms", "trim_mean_ms"])
        return out.assign(share=out["trim_mean_ms"] / out["trim_mean_ms"].sum())

    ref = table([["a", "Convolution (NHWC, F32) IGEMM", "xnnpack", 10, 4.0, 4.0],
                 ["", "Transpose (ND, X32)", "xnnpack", 10, 0.5, 0.5],
                 ["b", "Fully Connected (NC, F32) GEMM", "xnnpack", 10, 2.0, 2.0],
                 ["b.bias", "add.out", "portable", 10, 1.0, 1.0],
                 ["", OUTSIDE, "", 10, float("nan"), 0.5]])  # fmt: skip
    var = table([["a", "Convolution (NHWC, F32) IGEMM", "xnnpack", 10, 1.0, 1.0],
                 ["", "Transpose (ND, X32)", "xnnpack", 10, 0.5, 0.5],
                 ["b", "Fully Connected (NC, F32) GEMM", "xnnpack", 10, 1.0, 1.0],
                 ["", OUTSIDE, "", 10, float("nan"), 0.5]])  # fmt: skip
    both = side_by_side(ref, var)
    assert both["layer"].tolist() == ["a", "", "b", "b.bias", ""]
    assert both["change_x"].iloc[0] == 4.0 and both["change_x"].iloc[2] == 2.0
    assert math.isnan(both["variant_trim_mean_ms"].iloc[3])  # removed by the technique: the variant's side is empty
    layers = per_layer(both)
    assert layers["layer"].tolist() == ["a", "b", "b.bias", "(no layer)", OUTSIDE]
    assert layers.set_index("layer").loc["b.bias", "backend"] == "portable"
    assert backend_shares(both) == ["portable: 12.5% of the base's run, 0.0% of the variant's",
                                    "xnnpack: 81.2% of the base's run, 83.3% of the variant's"]  # fmt: skip


def test_a_dump_read_without_its_etrecord_has_no_layer_names(pair, host_tables, tmp_path):
    dumps = fast_host(warmup=2, iters=20).profile([str(pair[0])], [1, 1, 28, 28], tmp_path)
    table, p50 = operators(tmp_path / "0.etdp", None, skip=2)
    assert p50 > 0 and len(table) == len(host_tables[0][0])
    assert (table["layer"].fillna("") == "").all()
    assert dumps == [{"etdump": str(tmp_path / "0.etdp"), "skip": 2}]


def test_unreadable_dumps_and_unprofiled_files_are_one_line_errors(pair, tmp_path):
    (tmp_path / "0.etdp").write_bytes(b"not a flatbuffer")
    with pytest.raises(UserError, match=r"^the ETDump 0.etdp could not be read \("):
        read_dumps(pair[:1], [{"etdump": str(tmp_path / "0.etdp"), "skip": 0}], tmp_path)
    ptl = tmp_path / "model.ptl"
    said = ("no per-operator profile of .ptl files: the lite interpreter has no operator profiler (README: Per-layer "
            "profile)")  # fmt: skip
    assert fast_host().profile([str(ptl)], [1, 1, 28, 28], tmp_path) == [{"error": said}]
    with pytest.raises(UserError, match="^no per-operator profile of .ptl files"):
        read_dumps([ptl], [{"error": said}], tmp_path)


def test_the_etrecord_is_written_beside_the_pte(pair):
    for path in pair:
        assert etrecord_of(path).name == "model.etrecord" and etrecord_of(path).stat().st_size > 0


@pytest.mark.slow
def test_the_phone_writes_the_dump_and_it_is_pulled_and_read(server, phone, pair, tmp_path):
    runner = make_fake_executor_runner(tmp_path / "executor_runner", event_tracer=True)
    device = adb_device(server, phone, None, et_runner=str(runner), warmup=2, iters=6)
    folder = tmp_path / "pulled"
    folder.mkdir()
    dumps = device.profile([str(p) for p in pair], [1, 1, 28, 28], folder)
    assert dumps == [{"etdump": str(folder / f"{i}.etdp"), "skip": 2} for i in range(2)]
    read = read_dumps(pair, dumps, folder)
    table = pd.read_csv(folder / read[1]["table"])
    assert [layer for layer in dict.fromkeys(table["layer"].dropna()) if layer in LENET_LAYERS] == LENET_LAYERS
    assert (table["runs"] == 6).all()  # 2 warm-up + 6 executions in one run, the warm-up dropped
    assert any("--etdump_path=/data/local/tmp/" in command for command in phone.commands)


@pytest.mark.slow
def test_a_runner_built_without_the_event_tracer_says_how_to_build_one(server, phone, pair, tmp_path):
    runner = make_fake_executor_runner(tmp_path / "executor_runner")  # no event tracer: no --etdump_path flag
    device = adb_device(server, phone, None, et_runner=str(runner))
    [dump] = device.profile([str(pair[0])], [1, 1, 28, 28], tmp_path)
    assert dump == {"error": "executor_runner has no flag --etdump_path: it was built without the event tracer; "
                             "build one with -DEXECUTORCH_ENABLE_EVENT_TRACER=ON and -DEXECUTORCH_BUILD_DEVTOOLS=ON "
                             "(README: Per-layer profile)"}  # fmt: skip


@pytest.mark.slow
def test_cli_profile_writes_profile_csv_and_the_report_and_a_ptl_row_gets_a_note(tmp_path):
    common = ["model=lenet5", "train.epochs=1", "finetune.epochs=0", "dataset.limit_train=512",
              "dataset.limit_test=128", "technique=prune_channel", "ratio=0.5", "device.warmup=5", "device.iters=40",
              "device.rounds=1", "device.min_time_s=0", "device.memory=false", "device.profile=true",
              f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    done = cli("-m", "export=pte,ptl", *common)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = pd.read_csv(tmp_path / "sweep" / "summary.csv").set_index("format")
    assert (rows["status"] == "ok").all()
    pte, ptl = rows.loc["pte"], rows.loc["ptl"]
    profile = pd.read_csv(pte["profile"])
    assert set(LENET_LAYERS) <= set(profile["layer"].dropna()) and pte["profile_ms_p50"] > 0
    assert pte["profile_from"] == "computed"
    assert pd.isna(ptl["profile"]) and f"profile: UserError: {no_profile('model.ptl')}" in ptl["notes"]
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "## Per-layer profiles (ms per run: trimmed means)" in report and "| features.3 " in report
    assert "Unsupported kwarg" not in done.stdout + done.stderr  # the Inspector's warnings stay off the terminal
    again = cli("-m", "export=pte", *common)
    assert again.returncode == 0
    rerun = json.loads((tmp_path / "sweep" / "0" / "result.json").read_text())
    assert rerun["profile_from"] == "cache"
