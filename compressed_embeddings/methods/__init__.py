"""Compression methods: one function per name, turning an embedding matrix into codes + a decoder.

A method is a function `(matrix, config, *, show_progress) -> MethodOutput`, registered under the name
that `CompressedEmbeddingConfig.method` uses:

```python
@register_method("my_method")
def my_method(matrix, config, *, show_progress=True) -> MethodOutput: ...
```
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..configuration import KNOWN_METHODS, CompressedEmbeddingConfig


@dataclass
class MethodOutput:
    """What a method returns: codes (V x k), the decoder's state dict, and the training loss per epoch."""

    codes: torch.Tensor
    decoder_state: dict[str, torch.Tensor]
    loss_history: list[float] = field(default_factory=list)


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


def run_method(matrix: torch.Tensor, config: CompressedEmbeddingConfig, *, show_progress: bool = True) -> MethodOutput:
    """Run the method `config.method` on `matrix` (V x d, float32) with a resolved config."""
    return get_method(config.method)(matrix, config, show_progress=show_progress)


from . import autoencoder, svd  # noqa: E402,F401  (register the built-in methods)

__all__ = ["MethodOutput", "register_method", "get_method", "run_method"]
