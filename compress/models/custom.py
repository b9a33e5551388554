"""Your own model (`model=custom model.target=PACKAGE.MODULE.NAME`): a class or function on the Python path taking
the zoo's signature (input_shape, num_classes, **kwargs) and returning an nn.Module; `+model.KEY=V` are its
keyword arguments. What the row needs to say when it is not that is one line."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from hydra.utils import get_object
from torch import nn

from compress.errors import UserError, first_line


def custom(target: str | None, input_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    """`target(input_shape, num_classes, **kwargs)`, checked."""
    if not target:
        raise UserError("model=custom needs model.target=PACKAGE.MODULE.NAME (a class or function on PYTHONPATH)")
    try:
        constructor = get_object(target)
    except Exception as exc:  # ImportError, AttributeError, ValueError: Hydra's locate says which part failed
        raise UserError(f"model.target={target} cannot be imported ({first_line(exc)}); "
                        "put the folder that holds its module on PYTHONPATH") from None  # fmt: skip
    arguments = ", ".join(["input_shape", "num_classes", *kwargs])
    try:
        inspect.signature(constructor).bind(list(input_shape), num_classes, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"model.target={target} does not take ({arguments}): {exc}; give it the zoo's signature "
                        "(input_shape, num_classes, **kwargs)") from None  # fmt: skip
    model = constructor(list(input_shape), num_classes, **kwargs)
    if not isinstance(model, nn.Module):
        raise UserError(f"model.target={target} returned a {type(model).__name__}, not a torch.nn.Module")
    return model
