"""Per-layer latency profiles of .pte files: an ETDump (the runtime's event tracer, written where the file ran) read
by ExecuTorch's devtools Inspector with the program's ETRecord (written at export) → one row per operator, and the
reference and the variant side by side per layer (`profile.csv`).

Operators outside a delegate carry their module path in the ETRecord. Inside an XNNPACK delegate the events are
XNNPACK's own operators (`Convolution (NHWC, F32) IGEMM #2`): the ETRecord maps the delegate call as a whole to the
nodes it took, in graph order, and the i-th XNNPACK operator of a kind (convolution, fully connected, ...) is the
i-th node of that kind — a delegate whose counts differ leaves its operators without a layer rather than guess.
Layout operators XNNPACK adds (transposes, reshapes, conversions) have no layer. XNNPACK times its operators in
whole microseconds: shares are of trimmed means (the middle 80% of runs: resolution below a microsecond, and a
run the OS preempted does not count), medians beside them; the time outside the operators is each run's whole
time less its operators', so a spike inside an operator stays that operator's.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import trim_mean

from compress.errors import UserError, first_line

# XNNPACK operator kinds → the aten operators of the delegated graph they run (node names `aten_<op>_<overload>_N_`)
KINDS = {
    "Convolution": ("convolution",), "Deconvolution": ("convolution",),
    "Fully Connected": ("linear", "addmm", "mm", "bmm"), "Batch Matrix Multiply": ("bmm", "matmul"),
    "Max Pooling": ("max_pool2d",), "Average Pooling": ("avg_pool2d",),
    "Global Average Pooling": ("mean", "adaptive_avg_pool2d"), "Mean": ("mean", "adaptive_avg_pool2d"),
    "Add": ("add",), "Subtract": ("sub",), "Multiply": ("mul",), "Divide": ("div",),
    "Clamp": ("relu", "hardtanh", "clamp"), "HardSwish": ("hardswish",), "Sigmoid": ("sigmoid",),
    "Softmax": ("softmax", "_softmax"), "Constant Pad": ("constant_pad_nd", "pad"), "Concatenate": ("cat",),
}  # fmt: skip
TOTAL, OUTSIDE = "Method::execute", "(outside the operators: runtime and delegate calls)"
NUMBERED = re.compile(r"^(.*?) #\d+$")
NO_ETRECORD = (
    "profile: no ETRecord beside the file (cached before profiles were added): its layers are unnamed; "
    "delete its cache entry to name them"
)
COLUMNS = ["layer", "op", "backend", "runs", "p50_ms", "trim_mean_ms", "share"]
TRIM = 0.1  # trim_mean_ms: the mean of the middle 80% of runs (a run the OS preempted or a cold cache does not count)
NO_LAYER = "(no layer)"  # operators the ETRecord maps to no module: layout operators, fused activations, ...


def etrecord_of(path: Path) -> Path:
    """The ETRecord written beside a .pte (`model.etrecord`, compress/formats/pte.py): its edge program and debug
    handles, which map a profile's operators to the model's layers."""
    return Path(path).with_suffix(".etrecord")


def kind(xnnpack_op: str) -> str:
    """`Convolution (NHWC, F32) IGEMM #1` → `Convolution`."""
    return xnnpack_op.split(" (")[0].split(" #")[0]


def _layer(hierarchy: dict) -> str:
    """The innermost module path of one node's module hierarchy ({name: (path, type)}, outermost first)."""
    return list(hierarchy.values())[-1][0] if hierarchy else ""


def delegate_layers(ops: list[str], nodes: dict[str, dict]) -> list[str]:
    """The layer of each XNNPACK operator of one delegate call, in order: the i-th operator of a kind is the i-th
    delegated node of that kind; "" for layout operators and for every operator of a kind whose counts differ."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for node, hierarchy in nodes.items():
        for name, aten in KINDS.items():
            if any(node.startswith(f"aten_{op}_") for op in aten):
                by_kind[name].append(_layer(hierarchy))
    counts = Counter(kind(op) for op in ops)
    seen: dict[str, int] = defaultdict(int)
    layers = []
    for op in ops:
        k = kind(op)
        matched = k in KINDS and len(by_kind.get(k, [])) == counts[k]
        layers.append(by_kind[k][seen[k]] if matched else "")
        seen[k] += 1
    return layers


def operators(etdump: Path, etrecord: Path | None, skip: int) -> tuple[pd.DataFrame, float]:
    """One row per operator event of the profiled runs (the first `skip` of each dropped: the warm-up), in
    execution order: layer, op, backend, runs, p50_ms, trim_mean_ms, share (of their sum), plus one row for the
    time outside the operators (each run's whole time less its operators'); and the whole run's median (ms). An
    unreadable dump is a UserError."""
    from executorch.devtools import Inspector

    try:
        with quiet():
            inspector = Inspector(etdump_path=str(etdump), etrecord=str(etrecord) if etrecord else None)
    except Exception as exc:  # flatbuffer parse errors, a dump of another program, ...
        raise UserError(f"the ETDump {etdump.name} could not be read ({first_line(exc)})") from exc
    events = [e for block in inspector.event_blocks if block.name == "Execute" for e in block.events]
    rows, spent, pending, whole = [], [], [], None
    for event in events:
        times = event.perf_data.raw[skip:] if event.perf_data else []
        if not times:
            continue
        if event.name == TOTAL:
            whole = times
        elif event.name == "DELEGATE_CALL":  # the delegate's operators came before it
            layers = delegate_layers([e.name for e, _ in pending], event.module_hierarchy or {})
            for (e, t), layer in zip(pending, layers, strict=True):
                rows.append(_row(layer, NUMBERED.sub(r"\1", e.name), backend(e), t))
                spent.append(t)
            pending = []
        elif event.is_delegated_op:
            pending.append((event, times))
        elif event.name.startswith("native_call_"):  # OPERATOR_CALL wraps the same kernel call: counted once
            node = next(iter((event.module_hierarchy or {"": {}}).values()))
            rows.append(_row(_layer(node), event.name.removeprefix("native_call_"), "portable", times))
            spent.append(times)
    if whole is None:
        raise UserError(f"the ETDump {etdump.name} holds no executions of the method")
    outside = np.asarray(whole) - np.sum(spent, axis=0)  # per run: a spike inside an operator stays that operator's
    table = pd.DataFrame([*rows, _row("", OUTSIDE, "", outside)], columns=COLUMNS[:-1])
    table["share"] = table["trim_mean_ms"] / table["trim_mean_ms"].sum()
    return table, float(np.median(whole))


def backend(event) -> str:
    """`XnnpackBackend` → `xnnpack` (what the row's `delegate` column says)."""
    return (event.delegate_backend_name or "delegate").removesuffix("Backend").lower()


def _row(layer: str, op: str, backend: str, times: list[float]) -> list:
    return [layer, op, backend, len(times), float(np.median(times)), float(trim_mean(times, TRIM))]


def side_by_side(reference: pd.DataFrame, variant: pd.DataFrame) -> pd.DataFrame:
    """The two files' operators matched by (layer, operator kind, occurrence) — layers a technique removed or
    added are rows with one side empty; `change_x` = reference / variant trimmed mean (> 1: faster; means, since
    XNNPACK's whole microseconds make a short operator's median 0 or 1)."""

    def keyed(table: pd.DataFrame) -> pd.DataFrame:
        table = table.assign(layer=table["layer"].fillna(""), kind=[kind(op) for op in table["op"]])
        table["n"] = table.groupby(["layer", "kind"]).cumcount()
        return table.set_index(["layer", "kind", "n"])

    ref, var = keyed(reference), keyed(variant)
    both = ref.join(var, how="outer", lsuffix="_ref", rsuffix="_variant", sort=False)
    both = both.reindex([*ref.index, *(k for k in var.index if k not in ref.index)])
    out = pd.DataFrame({
        "layer": both.index.get_level_values("layer"), "op": both["op_ref"].fillna(both["op_variant"]).values,
        "backend": both["backend_ref"].fillna(both["backend_variant"]).values,
        "base_p50_ms": both["p50_ms_ref"].values, "variant_p50_ms": both["p50_ms_variant"].values,
        "base_trim_mean_ms": both["trim_mean_ms_ref"].values,
        "variant_trim_mean_ms": both["trim_mean_ms_variant"].values,
        "base_share": both["share_ref"].values, "variant_share": both["share_variant"].values,
    })  # fmt: skip
    out["change_x"] = out["base_trim_mean_ms"] / out["variant_trim_mean_ms"].where(out["variant_trim_mean_ms"] > 0)
    return out


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The Inspector's warnings about the ETRecord's graph (kwargs it does not map, symbols, a missing debug buffer)
    kept off the terminal: they say nothing about the timings."""
    serde = logging.getLogger("executorch.exir.serde")
    level = serde.level
    serde.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        serde.setLevel(level)


def read_dumps(artifacts: list[Path], dumps: list[dict], folder: Path) -> list[dict]:
    """Each artifact's dump ({"etdump", "skip"} from the device) read into its operators table, written as
    `folder/<i>.csv`: [{"table": "<i>.csv", "p50_ms": whole run's median, "named": whether an ETRecord named its
    layers}]. A file the device could not profile ({"error": ...}) or an unreadable dump is a UserError."""
    read = []
    for i, (artifact, dump) in enumerate(zip(artifacts, dumps, strict=True)):
        if "error" in dump:
            raise UserError(dump["error"])
        etrecord = etrecord_of(artifact)
        named = etrecord.exists()
        table, p50 = operators(Path(dump["etdump"]), etrecord if named else None, dump["skip"])
        table.to_csv(folder / f"{i}.csv", index=False)
        read.append({"table": f"{i}.csv", "p50_ms": p50, "named": named})
    return read


def per_layer(profile: pd.DataFrame) -> pd.DataFrame:
    """A side-by-side profile (`profile.csv`) summed per layer, in execution order: base and variant ms (trimmed
    means) and shares, change_x, and the backends its operators ran on; operators of no layer in one row, the time
    outside the operators last."""
    table = profile.assign(layer=profile["layer"].fillna(NO_LAYER).replace("", NO_LAYER))
    outside = table["op"] == OUTSIDE
    table.loc[outside, "layer"] = OUTSIDE
    total = lambda v: v.sum(min_count=1)  # noqa: E731 (NaN where the layer is not in that file)
    grouped = table.groupby("layer", sort=False).agg(
        backend=("backend", lambda b: "+".join(sorted(set(b.dropna())))), base_ms=("base_trim_mean_ms", total),
        variant_ms=("variant_trim_mean_ms", total), base_share=("base_share", total),
        variant_share=("variant_share", total),
    )  # fmt: skip
    last = [k for k in (NO_LAYER, OUTSIDE) if k in grouped.index]
    grouped = grouped.loc[[k for k in grouped.index if k not in last] + last].reset_index()
    grouped["change_x"] = grouped["base_ms"] / grouped["variant_ms"].where(grouped["variant_ms"] > 0)
    return grouped


def backend_shares(profile: pd.DataFrame) -> list[str]:
    """One line per backend: the share of the whole run its operators took in the reference and in the variant
    (XNNPACK-delegated blocks vs operators left on portable kernels)."""
    ops = profile[profile["op"] != OUTSIDE]
    shares = ops.groupby("backend")[["base_share", "variant_share"]].sum()
    return [f"{name}: {base:.1%} of the base's run, {variant:.1%} of the variant's"
            for name, (base, variant) in shares.iterrows()]  # fmt: skip
