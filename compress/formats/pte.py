"""The ExecuTorch format (.pte): torch.export → edge dialect lowered to the XNNPACK delegate (or left on ExecuTorch's
portable kernels) → an ExecuTorch program; loaded back with ExecuTorch's runtime, what executor_runner and the
ExecuTorch Android runtime run. int8 files come from the PT2E route (compress/techniques/pt2e.py).

A .pte has static shapes: the file takes the example's shape (batch 1), so evaluation runs one sample per call and
the file whose accuracy is measured is the file that is timed. Importing this module imports ExecuTorch once in
the job process, so the forked stage children do not each pay for it (the variant's plan imports the PT2E route
when a step quantizes); importing starts no thread (ExecuTorch's thread pool starts when a program first runs, in
a child).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower
from executorch.exir._serialize._program import deserialize_pte_binary
from executorch.exir.schema import Program
from executorch.extension.pybindings import portable_lib
from executorch.runtime import Runtime
from torch import nn

from compress.cache import atomic_write
from compress.errors import UserError, cannot
from compress.formats.base import Format
from compress.profile import etrecord_of

DELEGATES = ("xnnpack", "portable")


def _program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """`model` captured by torch.export on `example`; a model it cannot capture gets one line."""
    try:
        return torch.export.export(model.eval(), (example,))
    except Exception as exc:  # torch.export raises UserError, Unsupported, GuardOnDataDependentSymNode, ...
        raise cannot(
            model, "exported to .pte by torch.export", exc,
            "make its forward exportable (no data-dependent control flow) or use export=ptl",
        ) from exc


def kernel_ops(program: Program) -> list[str]:
    """The operators an ExecuTorch program runs on kernels (outside every delegate), named as the runtime names
    them (`aten::cumsum.out`), sorted."""
    operators = program.execution_plan[0].operators
    return sorted({f"{op.name}.{op.overload}" if op.overload else op.name for op in operators})


def planned_memory(program: bytes) -> dict:
    """What a serialized program plans before it runs (ExecuTorch's Python runtime does not expose its
    method metadata's buffer sizes): `mem_planned_kb`, the memory-planned buffers of `forward` (its inputs, outputs
    and the activations between operators outside a delegate; XNNPACK sizes its own workspace at run time), and
    `mem_weights_kb`, the constant data (the program's constant buffers and the named data XNNPACK reads its
    weights from)."""
    pte = deserialize_pte_binary(program)
    plan = next(p for p in pte.program.execution_plan if p.name == "forward")
    constants = sum(len(buffer.storage) for buffer in pte.program.constant_buffer)
    named = sum(map(len, pte.named_data.buffers)) if pte.named_data else 0
    return {"mem_planned_kb": sum(plan.non_const_buffer_sizes) / 1024, "mem_weights_kb": (constants + named) / 1024}


def export_pte(model: nn.Module, example: torch.Tensor, path: Path, delegate: str = "xnnpack") -> dict:
    """Export `model` on `example`, lower it to `delegate`, write the ExecuTorch program and its ETRecord (its edge
    program before lowering, ~1.3× the file); the row columns that say how (`export_note` lists the operators
    XNNPACK did not take). A program that needs an operator ExecuTorch's
    runtime does not have (it could not be evaluated) gets a one-line UserError."""
    program = _program(model, example)
    if delegate == "portable" and any("quantized_decomposed" in str(n.target) for n in program.graph.nodes):
        raise UserError("int8 .pte files need export.delegate=xnnpack (ExecuTorch's portable kernels have no int8 ops)")
    partitioners = [XnnpackPartitioner()] if delegate == "xnnpack" else []
    lowered = to_edge_transform_and_lower(program, partitioner=partitioners, generate_etrecord=True).to_executorch()
    etrecord = lowered.get_etrecord()
    etrecord.exported_program = etrecord.export_graph_id = None  # the profile maps to the edge program alone
    ops = kernel_ops(lowered.executorch_program)
    missing = sorted(set(ops) - set(portable_lib._get_operator_names()))
    if missing:
        raise UserError(f"{type(model).__name__} needs operators ExecuTorch's runtime does not have "
                        f"({', '.join(missing)}); replace the layers that use them or use export=ptl")  # fmt: skip
    atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(lowered.buffer))
    atomic_write(etrecord_of(path), etrecord.save)
    note = f"on portable kernels (XNNPACK did not take them): {', '.join(ops)}" if ops and partitioners else ""
    return {"format": "pte", "delegate": delegate, "export_note": note} | planned_memory(lowered.buffer)


def use_threads(threads: int) -> None:
    """Size ExecuTorch's thread pool (the one XNNPACK runs on) to `threads`."""
    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)


def load_pte(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The file loaded by ExecuTorch's runtime on torch's thread count, as a callable on a batch: one sample per
    call, since the file's batch size is 1."""
    use_threads(torch.get_num_threads())
    program = Runtime.get().load_program(Path(path))
    method = program.load_method("forward")

    def forward(x: torch.Tensor, program=program) -> torch.Tensor:  # the method needs its program alive
        return torch.cat([method.execute([sample])[0] for sample in x.split(1)])

    return forward


class Pte(Format):
    """`.pte` files, what executor_runner and the ExecuTorch Android runtime load; int8 through PT2E."""

    name = "pte"
    int8_route = "pt2e"
    packages = ("executorch", "torchao")

    def __init__(self, delegate: str = "xnnpack"):
        if delegate not in DELEGATES:
            raise UserError(f"unknown export.delegate {delegate!r}; use {' or '.join(DELEGATES)}")
        self.delegate = delegate

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> dict:
        return export_pte(model, example, path, self.delegate)

    def load(self, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        return load_pte(path)
