"""Compression methods: one function per name, turning an embedding matrix into codes + a decoder.

A method is a function `(matrix, config, *, show_progress) -> MethodOutput`, registered under the name
that `CompressedEmbeddingConfig.method` uses. A method that can use calibration statistics
([`CalibrationStats`]) or needs the dtype the layer will be stored in declares keyword arguments `calibration`
and `dtype`:

```python
@register_method("my_method")
def my_method(matrix, config, *, show_progress=True) -> MethodOutput: ...
```
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..configuration import KNOWN_METHODS, CompressedEmbeddingConfig


@dataclass
class MethodOutput:
    """What a method returns: codes (V x k), the decoder's state dict, and the training loss per epoch.

    A method whose codes are packed integers returns `codes=None` and `packed` (the arguments of
    `PackedCodes.set_codes`: `values`, `row_tiers`, `codebooks`), with the layout it chose in `config_updates`.
    """

    codes: torch.Tensor | None
    decoder_state: dict[str, torch.Tensor]
    loss_history: list[float] = field(default_factory=list)
    packed: dict[str, Any] | None = None
    config_updates: dict[str, Any] = field(default_factory=dict)


Method = Callable[..., MethodOutput]
_METHODS: dict[str, Method] = {}


def register_method(name: str) -> Callable[[Method], Method]:
    """Register a compression function under `name` (refuses a name already taken)."""

    def decorator(function: Method) -> Method:
        if name in _METHODS:
            raise ValueError(f"A compression method named {name!r} is already registered; choose another name.")
        if name not in KNOWN_METHODS:
            raise ValueError(f"Add {name!r} to configuration.KNOWN_METHODS so that configs can name it.")
        _METHODS[name] = function
        return function

    return decorator


def get_method(name: str) -> Method:
    """The function registered for `name`."""
    if name not in _METHODS:
        raise ValueError(f"Unknown compression method {name!r}; available: {', '.join(sorted(_METHODS))}.")
    return _METHODS[name]


def run_method(
    matrix: torch.Tensor,
    config: CompressedEmbeddingConfig,
    *,
    show_progress: bool = True,
    calibration=None,
    dtype: torch.dtype = torch.float32,
) -> MethodOutput:
    """Run the method `config.method` on `matrix` (V x d, float32) with a resolved config; `calibration` and `dtype`
    reach the methods that declare them (calibration given to any other method is an error)."""
    method = get_method(config.method)
    accepted = inspect.signature(method).parameters
    extra: dict[str, Any] = {"dtype": dtype} if "dtype" in accepted else {}
    if calibration is not None:
        if "calibration" not in accepted:
            raise ValueError(
                f"method={config.method!r} does not use calibration statistics; drop `calibration` or use "
                "method='transform_coding'."
            )
        extra["calibration"] = calibration
    return method(matrix, config, show_progress=show_progress, **extra)


from . import autoencoder, svd, transform_coding  # noqa: E402,F401  (register the built-in methods)

__all__ = ["MethodOutput", "register_method", "get_method", "run_method"]
