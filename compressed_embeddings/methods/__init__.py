"""Compression methods: each is a settings dataclass and a function, registered together with one call.

A method turns the embedding matrix (`V x d`, float32) into codes and the state dict of a decoder. Its settings are a
dataclass subclassing [`MethodConfig`] (fields with `metadata={"help": ...}`, which the CLI turns into flags; its
validation; its default decoder bias; how a ratio becomes a size; its presets; its model-card text), and its
function is `(matrix, config, *, show_progress) -> MethodOutput`, where `config` is the resolved
[`CompressedEmbeddingConfig`] (the method's settings are `config.method_config`, also readable as
`config.<setting>`). A function that uses calibration statistics ([`CalibrationStats`]) or the dtype the layer will be
stored in declares keyword arguments `calibration` and `dtype`.

Example:

```python
>>> import dataclasses, torch
>>> from compressed_embeddings.methods import MethodConfig, MethodOutput, register_method
>>> @dataclasses.dataclass
... class RandomProjectionConfig(MethodConfig):
...     name = "random_projection"
...     decoder_bias = False
...     scale: float = dataclasses.field(default=1.0, metadata={"help": "Scale of the projection."})
>>> def random_projection(matrix, config, *, show_progress=True):
...     basis = torch.linalg.qr(torch.randn(matrix.shape[1], config.code_dim))[0] * config.scale
...     return MethodOutput(codes=matrix @ basis, decoder_state={"weight": basis / config.scale**2})
>>> register_method(RandomProjectionConfig, random_projection)  # doctest: +SKIP
```
"""

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .. import configuration
from ..configuration import CompressedEmbeddingConfig, CompressedEmbeddingConfigError, is_int, is_number


@dataclass
class MethodOutput:
    """What a method returns: codes (V x k), the decoder's state dict, and the training loss per epoch.

    A method whose codes are packed integers returns `codes=None` and `packed` (the arguments of
    `PackedCodes.set_codes`: `values`, `row_tiers`, `codebooks`), with the layout it chose in `config_updates`.
    `stage_seconds` optionally times its stages (`CompressionReport.stage_seconds` lists them).
    """

    codes: torch.Tensor | None
    decoder_state: dict[str, torch.Tensor]
    loss_history: list[float] = field(default_factory=list)
    packed: dict[str, Any] | None = None
    config_updates: dict[str, Any] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class MethodConfig:
    """Base of a method's settings. Subclass it as a dataclass, set `name`, and add the method's fields (each with
    `metadata={"help": ...}`; `"choices"` too for a fixed set of values).

    Class attributes a method may set: `name` (what `CompressedEmbeddingConfig.method` says), `summary` (one line for
    the CLI's `--method` help), `decoder_bias` (the bias its decoder has unless the config says otherwise),
    `packed_codes` (its codes are packed integers, `codes_dtype="packed"`), `presets` (named recipes: preset name ->
    settings), `card` (its text in the model card, a `cards.MethodText`).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    decoder_bias: ClassVar[bool] = True
    packed_codes: ClassVar[bool] = False
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    card: ClassVar[Any] = None

    def validate(self) -> None:
        """Check the settings; raise `CompressedEmbeddingConfigError` naming the field, the value and what is allowed.
        The default checks the `"choices"` of the fields' metadata."""
        for item in dataclasses.fields(self):
            choices = item.metadata.get("choices")
            if choices is not None and getattr(self, item.name) not in choices:
                self.fail(item.name, f"one of {', '.join(map(repr, choices))}")

    def check(self, spec: CompressedEmbeddingConfig) -> None:
        """Check what the method needs of the rest of the config (`spec`); raise `CompressedEmbeddingConfigError`
        (`spec._fail(name, allowed)`) otherwise. Default: nothing."""

    def require_int(self, *names: str, minimum: int = 1, optional: bool = False) -> None:
        """Fail unless each setting in `names` is an int >= `minimum` (or None when `optional`)."""
        for name in names:
            value = getattr(self, name)
            if not (optional and value is None) and (not is_int(value) or value < minimum):
                allowed = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
                self.fail(name, allowed + (" or None" if optional else ""))

    def require_number(self, *names: str, positive: bool = False) -> None:
        """Fail unless each setting in `names` is a finite number >= 0 (> 0 when `positive`)."""
        for name in names:
            value = getattr(self, name)
            if not is_number(value) or value < 0 or (positive and value == 0):
                self.fail(name, "a finite number > 0" if positive else "a finite number >= 0")

    def fail(self, name: str, allowed: str) -> None:
        """Raise the error for setting `name`, whose value is not `allowed`."""
        raise CompressedEmbeddingConfigError(
            f"CompressedEmbeddingConfig.{name} is invalid: got {getattr(self, name)!r}; expected {allowed}."
        )

    def resolved(self, spec: CompressedEmbeddingConfig) -> tuple["MethodConfig", dict[str, Any]]:
        """The settings with the choices left open (`None`) fixed, and the layer fields this method fills when `spec`
        leaves them open. Default: the method's decoder bias, a decoder in the model's float dtype."""
        return self, {"decoder_bias": type(self).decoder_bias, "decoder_dtype": "float"}

    def code_dim_for(self, spec: CompressedEmbeddingConfig, vocab_size: int, hidden_size: int) -> int:
        """The code width k of a `vocab_size x hidden_size` embedding: `spec.code_dim`, or the largest k whose stored
        parameters (codes + decoder) fit `spec.compression_ratio`."""
        if spec.code_dim is not None:
            k = spec.code_dim
        else:
            k, lo, hi = 0, 1, hidden_size
            while lo <= hi:  # largest k whose stored parameters fit the budget
                mid = (lo + hi) // 2
                if vocab_size * hidden_size / spec.stored_parameters(vocab_size, hidden_size, mid) >= (
                    spec.compression_ratio
                ):
                    k, lo = mid, mid + 1
                else:
                    hi = mid - 1
            if k < 1:
                best = vocab_size * hidden_size / spec.stored_parameters(vocab_size, hidden_size, 1)
                raise CompressedEmbeddingConfigError(
                    f"CompressedEmbeddingConfig.compression_ratio is invalid: got {spec.compression_ratio!r}; for an "
                    f"embedding of {vocab_size} x {hidden_size} the highest ratio reachable is {best:.2f} "
                    "(code_dim=1). Ask for a smaller ratio."
                )
        if k >= hidden_size:
            raise CompressedEmbeddingConfigError(
                f"CompressedEmbeddingConfig.code_dim is invalid: got {k}; expected an integer in [1, {hidden_size}) "
                f"(smaller than the hidden size {hidden_size}, or nothing is compressed)."
            )
        return k


Method = Callable[..., MethodOutput]


@dataclass(frozen=True)
class RegisteredMethod:
    """A registered method: its settings class and its function."""

    config_class: type[MethodConfig]
    function: Method

    @property
    def name(self) -> str:
        return self.config_class.name


_REGISTRY: dict[str, RegisteredMethod] = {}


def register_method(config_class: type[MethodConfig], function: Method) -> Method:
    """Register a method: its settings class (a [`MethodConfig`] dataclass whose `name` the configs use) and its
    function. After this one call, `CompressedEmbeddingConfig(method=name, <settings>...)`, `compress_model`, the
    CLI (`--method name` and a flag per setting), presets and the model card know it. Refuses a name already taken.
    Returns `function`."""
    if not (isinstance(config_class, type) and issubclass(config_class, MethodConfig)):
        raise TypeError(f"register_method expects a MethodConfig subclass, got {config_class!r}.")
    if not dataclasses.is_dataclass(config_class) or not config_class.name:
        raise ValueError(f"{config_class.__name__} must be a @dataclass with a class attribute `name`.")
    if config_class.name in _REGISTRY:
        raise ValueError(
            f"A compression method named {config_class.name!r} is already registered; choose another name."
        )
    clashes = {item.name for item in dataclasses.fields(config_class)} & {
        item.name for item in dataclasses.fields(CompressedEmbeddingConfig)
    }
    if clashes:
        raise ValueError(
            f"{config_class.__name__} has settings named like CompressedEmbeddingConfig fields: {sorted(clashes)}; "
            "rename them."
        )
    _REGISTRY[config_class.name] = RegisteredMethod(config_class, function)
    configuration.METHOD_CONFIGS[config_class.name] = config_class
    return function


def registered_methods() -> dict[str, RegisteredMethod]:
    """The registered methods by name (the built-in ones first)."""
    return dict(_REGISTRY)


def __getattr__(name: str) -> Any:
    if name == "KNOWN_METHODS":  # the names configs may use, derived from the registry
        return tuple(_REGISTRY)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def uses_calibration(name: str) -> bool:
    """Whether the method `name` takes calibration statistics (its function declares `calibration`)."""
    return "calibration" in inspect.signature(get_method(name)).parameters


def get_method(name: str) -> Method:
    """The function registered for `name`."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown compression method {name!r}; available: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name].function


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
            users = [name for name in _REGISTRY if uses_calibration(name)]
            raise ValueError(
                f"method={config.method!r} does not use calibration statistics; drop `calibration` or use "
                f"method={' or '.join(map(repr, users)) or 'another method'}."
            )
        extra["calibration"] = calibration
    return method(matrix, config, show_progress=show_progress, **extra)


from . import autoencoder, svd, transform_coding  # noqa: E402,F401  (register the built-in methods)

__all__ = [
    "MethodConfig",
    "MethodOutput",
    "RegisteredMethod",
    "register_method",
    "registered_methods",
    "get_method",
    "run_method",
    "uses_calibration",
]
