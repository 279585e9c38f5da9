"""Configuration of a compressed embedding, and the per-family model configs that carry it (remote code: it travels
inside every checkpoint, so it imports only the standard library, torch/transformers and single-dot siblings).

`CompressedEmbeddingConfig` is plain data describing the stored layer (method and size, storage of codes and decoder,
decoder shape, freezing and tying, the layer facts filled at compression, provenance), with the method's own settings
nested as `method_config` (their dataclass lives beside the method's code, `compressed_embeddings.methods`). It is the
`compressed_embedding` block of `config.json`. A compressed model's config class subclasses its family's
(`CompressedLlamaConfig(LlamaConfig)`, `model_type` `"compressed_llama"`), built on first access by name.
"""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import transformers
from transformers import PreTrainedConfig
from transformers.utils import logging

from .packed_codes import check_layout
from .version import FORMAT_VERSION, __version__

logger = logging.get_logger(__name__)

CONFIG_KEY = "compressed_embedding"
MODEL_TYPE_PREFIX = "compressed_"
CLASS_PREFIX = "Compressed"

#: Settings class of each registered method, by name. `compressed_embeddings.methods.register_method` fills it; in a
#: checkpoint's remote code it stays empty and a method's settings stay a plain dict (loading does not read them).
METHOD_CONFIGS: dict[str, type] = {}
#: Decoder activations (names; `layer.ACTIVATION_MODULES` maps them to modules).
ACTIVATIONS = ("elu", "gelu", "relu", "silu", "tanh")
#: Storage of the codes (names; `layer.CODES_TORCH_DTYPES` maps the float/int ones to torch dtypes).
CODES_DTYPES = ("float32", "float16", "bfloat16", "int8", "packed")

# Fields that describe the built layer; `compress_model` fills them, loading needs them.
STRUCTURAL_FIELDS = ("num_embeddings", "embedding_dim", "code_dim")


class CompressedEmbeddingConfigError(ValueError):
    """A `CompressedEmbeddingConfig` (or the `compressed_embedding` block of a config.json) is invalid."""


def is_int(value: Any) -> bool:
    """Whether `value` is an int (and not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether `value` is a finite int or float (not a bool; not an int too large for a float)."""
    if is_int(value):  # an int too large for a float is no usable number (and would overflow in arithmetic)
        try:
            value = float(value)
        except OverflowError:
            return False
    return isinstance(value, float) and math.isfinite(value)


def _is_sha256(value: Any) -> bool:
    """Whether `value` is a SHA-256 digest in lowercase hexadecimal."""
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _check_format_version(version: Any, library_version: Any) -> None:
    """Refuse a block written in a newer format before reading anything else of it (its fields may have changed)."""
    if is_int(version) and version > FORMAT_VERSION:
        raise CompressedEmbeddingConfigError(
            f"This `{CONFIG_KEY}` block has format_version {version} (written by compressed_embeddings "
            f"{library_version}), but this install ({__version__}) reads formats up to {FORMAT_VERSION}. "
            "Upgrade with `pip install -U compressed-embeddings`."
        )


def _setting_names(settings: Any) -> set[str]:
    if isinstance(settings, dict):
        return set(settings)
    return {item.name for item in dataclasses.fields(settings)} if dataclasses.is_dataclass(settings) else set()


@dataclass(init=False)
class CompressedEmbeddingConfig:
    r"""
    What to compress a token embedding into, and how.

    The embedding `E` (`V x d`) is replaced by per-token codes `C` (`V x k`) and a small decoder (`k -> d`). Give the
    size as `code_dim` (k) or as `compression_ratio`: the autoencoder and SVD count it in stored parameters (`k` is the
    largest whose ratio `V * d / (V * k + decoder parameters)` is still at least the one asked for), transform coding
    in bytes. The method's own settings are keyword arguments too (`CompressedEmbeddingConfig(method="autoencoder",
    epochs=5)`), readable as attributes (`config.epochs`) and kept in `method_config`, the method's dataclass (see
    `compressed_embeddings.methods`); a setting of another method is checked, then ignored with a warning.

    Args:
        method (`str`, *optional*, defaults to `"transform_coding"`):
            `"transform_coding"` (the default, the best measured: packed codes of a few bits per entry, its ratio in
            bytes), `"autoencoder"` (the paper's direction-aware AutoEncoder, its published recipe), `"svd"` (the
            baseline), or any method registered with `compressed_embeddings.methods.register_method`.
        method_config (`MethodConfig` or `dict`, *optional*):
            The method's settings; default: the method's defaults, updated by the settings given as keyword arguments.
        code_dim (`int`, *optional*):
            Width k of each token's code. Must be in `[1, d)`.
        compression_ratio (`float`, *optional*):
            Target ratio (> 1), used when `code_dim` is not given. Defaults to 10 when neither is given.
        decoder_hidden_dims (`list[int]`, *optional*, defaults to `[]`):
            Hidden widths of the decoder. Empty means one linear layer, as in the paper.
        decoder_activation (`str`, *optional*, defaults to `"elu"`):
            Activation between decoder layers (only used with hidden layers).
        decoder_bias (`bool`, *optional*):
            Whether decoder layers have a bias. Defaults to the method's choice (autoencoder: yes, SVD: no), fixed when
            the config is resolved.
        seed (`int`, *optional*, defaults to 1):
            Seed of every random choice; the same seed gives bitwise-equal codes on CPU.
        freeze_codes (`bool`, *optional*, defaults to `True`):
            Whether the codes are frozen when the compressed model is trained (the decoder trains), as in the paper.
        compress_output_head (`bool`, *optional*, defaults to `True`):
            The output head is compressed too: a tied head reads the input embedding's codes, an untied head gets
            codes of its own (`output_head`). `False` keeps the head's original matrix ("input only"; a tied head is
            untied).
        output_head (`CompressedEmbeddingConfig` or `dict`, *optional*):
            How an untied output head is compressed, e.g. `CompressedEmbeddingConfig(compression_ratio=5)`; default:
            as the input embedding. Filled with the head's resolved layer (`None` for a tied head, or when the head is
            kept).
        codes_dtype (`str`, *optional*):
            Storage of the codes: the model's dtype (default), `"float16"`, `"bfloat16"`, `"int8"` (one scale per row;
            frozen), or `"packed"` (methods with packed codes only: 0-8 bit integers indexing per-column codebooks).
        decoder_dtype (`str`, *optional*):
            `"int8"` (a linear decoder's weight as int8, one scale per code column: `Int8Linear`) or `"float"` (the
            model's dtype). Default: the method's choice (`transform_coding`: int8), fixed when resolved.
        code_bits (`list[list[int]]`, *optional*): Bits of each code column, per tier (packed codes; filled).
        tier_sizes (`list[int]`, *optional*): Rows in each tier (packed codes; filled).
        num_embeddings (`int`, *optional*): Rows V of the replaced embedding (filled).
        embedding_dim (`int`, *optional*): Width d of the replaced embedding (filled).
        padding_idx (`int`, *optional*): Its padding index (filled).
        embed_scale (`float`, *optional*): Scale of looked-up rows, Gemma's sqrt(d) (filled).
        tied_output_head (`bool`, *optional*): Whether an output head reads these codes (filled): the input
            embedding's tied head, or (in `output_head`) the untied head's own.
        zero_padding_row (`bool`, *optional*): Whether its padding row was zero (filled).
        calibration_data (`str`, *optional*): What calibration statistics were measured on (filled; for the card).
        base_model (`str`, *optional*): Hub id of the compressed model, the card's `base_model` (filled when the
            source is a Hub id; set it to name a local copy's origin).
        tensor_sha256 (`dict[str, str]`, *optional*): SHA-256 of the bytes of every stored tensor of the compressed
            embedding(s), by weight name (written by `save_pretrained`, verified by `from_pretrained`).

    "Filled" fields are set by `compress_model` (or the method), not by hand.

    Example:

    ```python
    >>> from compressed_embeddings import CompressedEmbeddingConfig
    >>> config = CompressedEmbeddingConfig(method="svd", compression_ratio=5)
    >>> config.code_dim_for(vocab_size=30522, hidden_size=768)
    149
    >>> CompressedEmbeddingConfig(method="autoencoder", epochs=5).method_config.epochs
    5
    ```
    """

    method: str = field(default="transform_coding", metadata={"help": "A registered method's name."})
    method_config: Any = field(default=None, metadata={"help": "The method's settings."})
    code_dim: int | None = field(default=None, metadata={"help": "Width k of the codes."})
    compression_ratio: float | None = field(default=None, metadata={"help": "Target V*d / stored parameters."})
    decoder_hidden_dims: list[int] = field(default_factory=list, metadata={"help": "Hidden decoder widths."})
    decoder_activation: str = field(default="elu", metadata={"help": f"One of {ACTIVATIONS}."})
    decoder_bias: bool | None = field(default=None, metadata={"help": "Decoder bias; None = method default."})
    seed: int = field(default=1, metadata={"help": "Random seed."})
    freeze_codes: bool = field(default=True, metadata={"help": "Freeze codes during fine-tuning."})
    compress_output_head: bool = field(default=True, metadata={"help": "Compress the output head too."})
    output_head: Any = field(default=None, metadata={"help": "An untied output head's own compressed layer."})
    codes_dtype: str | None = field(default=None, metadata={"help": f"Codes storage: None or one of {CODES_DTYPES}."})
    decoder_dtype: str | None = field(default=None, metadata={"help": "'float', 'int8' or None (the method's)."})
    code_bits: list[list[int]] | None = field(default=None, metadata={"help": "Packed codes: bits per column."})
    tier_sizes: list[int] | None = field(default=None, metadata={"help": "Packed codes: rows per tier."})
    # Filled by compress_model.
    num_embeddings: int | None = field(default=None, metadata={"help": "V of the replaced embedding."})
    embedding_dim: int | None = field(default=None, metadata={"help": "d of the replaced embedding."})
    padding_idx: int | None = field(default=None, metadata={"help": "padding_idx of the replaced embedding."})
    embed_scale: float = field(default=1.0, metadata={"help": "Scale applied to looked-up rows (Gemma)."})
    tied_output_head: bool = field(default=False, metadata={"help": "Output head tied to the codes."})
    zero_padding_row: bool = field(default=False, metadata={"help": "The padding row decodes to zeros."})
    calibration_data: str | None = field(default=None, metadata={"help": "What calibration statistics came from."})
    base_model: str | None = field(default=None, metadata={"help": "Hub id of the model that was compressed."})
    tensor_sha256: dict[str, str] | None = field(default=None, metadata={"help": "Checksums (written at save)."})
    format_version: int = field(default=FORMAT_VERSION, metadata={"help": "Version of this block's format."})
    library_version: str = field(default=__version__, metadata={"help": "compressed_embeddings that wrote it."})

    def __init__(self, method: str = "transform_coding", method_config: Any = None, **kwargs: Any) -> None:
        for item in dataclasses.fields(self):
            if item.name not in ("method", "method_config"):
                default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
                object.__setattr__(self, item.name, kwargs.pop(item.name, default))
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "method_config", self._settings(method_config, kwargs))
        if self.code_dim is None and self.compression_ratio is None:
            self.compression_ratio = 10.0
        if self.codes_dtype is None and getattr(self.method_class, "packed_codes", False):
            self.codes_dtype = "packed"
        if isinstance(self.decoder_hidden_dims, tuple):
            self.decoder_hidden_dims = list(self.decoder_hidden_dims)
        if isinstance(self.output_head, dict):
            self.output_head = type(self).from_dict(self.output_head)
        self.validate()

    def _settings(self, given: Any, flat: dict[str, Any]) -> Any:
        """The method's settings: `given` (its settings object or a dict) updated by the settings passed flat; a
        setting of another method is checked by that method's rules, then ignored with a warning."""
        cls, values = self.method_class, dataclasses.asdict(given) if dataclasses.is_dataclass(given) else given
        if cls is None:  # no such method registered here (remote code): keep the settings as data
            return {**(values or {}), **flat}
        if not isinstance(values, dict | None) or (dataclasses.is_dataclass(given) and not isinstance(given, cls)):
            raise CompressedEmbeddingConfigError(
                f"CompressedEmbeddingConfig.method_config is invalid: got a {type(given).__name__}; expected a "
                f"{cls.__name__} (the settings of method={self.method!r}), a dict, or None."
            )
        own = _setting_names(cls)
        for key, value in flat.items():
            owners = [other for other in METHOD_CONFIGS.values() if key in _setting_names(other)]
            if not owners:
                raise TypeError(
                    f"CompressedEmbeddingConfig got an unexpected keyword argument {key!r}: neither a field nor a "
                    f"setting of a registered method (method={self.method!r} has settings {sorted(own)})."
                )
            if cls not in owners:
                for owner in owners:
                    owner(**{key: value}).validate()
                logger.warning(
                    f"{key}={value!r} is a setting of method {owners[0].name!r}, not {self.method!r}: ignored"
                )
        values = {**(values or {}), **{key: value for key, value in flat.items() if key in own}}
        if unknown := sorted(set(values) - own, key=str):  # from a config.json's dict: dropped, as from_dict does
            logger.warning(f"Ignoring unknown settings {unknown} of method {self.method!r}.")
        return cls(**{key: value for key, value in values.items() if key in own})

    @property
    def method_class(self) -> type | None:
        """The settings class registered for `method` (None when none is, as in a checkpoint's remote code)."""
        return METHOD_CONFIGS.get(self.method) if isinstance(self.method, str) else None

    def __getattr__(self, name: str) -> Any:  # the method's settings, read flat: `config.epochs`
        settings = self.__dict__.get("method_config")
        if not name.startswith("__") and name in _setting_names(settings):
            return settings[name] if isinstance(settings, dict) else getattr(settings, name)
        raise AttributeError(f"CompressedEmbeddingConfig (method={self.__dict__.get('method')!r}) has no {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        settings = self.__dict__.get("method_config")
        if name not in self.__dataclass_fields__ and name in _setting_names(settings):
            return settings.__setitem__(name, value) if isinstance(settings, dict) else setattr(settings, name, value)
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ validation
    def _fail(self, name: str, allowed: str) -> None:
        raise CompressedEmbeddingConfigError(
            f"CompressedEmbeddingConfig.{name} is invalid: got {getattr(self, name)!r}; expected {allowed}."
        )

    def validate(self) -> None:
        """Check every field and the method's settings; raise `CompressedEmbeddingConfigError` naming the field, the
        value and what is allowed."""
        _check_format_version(self.format_version, self.library_version)
        # a resolved config describes a built layer, which loads without its method's code
        if not isinstance(self.method, str) or (METHOD_CONFIGS and not self.is_resolved and not self.method_class):
            self._fail("method", f"one of {', '.join(map(repr, sorted(METHOD_CONFIGS)))} (registered methods)")

        if self.decoder_activation not in ACTIVATIONS:
            self._fail("decoder_activation", f"one of {', '.join(map(repr, ACTIVATIONS))}")
        if self.codes_dtype is not None and self.codes_dtype not in CODES_DTYPES:
            self._fail("codes_dtype", f"None or one of {', '.join(map(repr, CODES_DTYPES))}")
        if self.codes_dtype == "int8" and not self.freeze_codes:
            self._fail("codes_dtype", "a float dtype when freeze_codes=False (int8 codes cannot be trained)")
        if self.decoder_dtype not in (None, "float", "int8") or (
            self.decoder_dtype == "int8" and self.decoder_hidden_dims
        ):
            self._fail("decoder_dtype", "None, 'float', or 'int8' with a linear decoder (decoder_hidden_dims=[])")
        if not is_int(self.format_version) or self.format_version < 1:
            self._fail("format_version", "a positive integer")
        if not is_int(self.seed) or self.seed < 0:
            self._fail("seed", "an integer >= 0")
        for name in ("code_dim", "num_embeddings", "embedding_dim"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                self._fail(name, "a positive integer or None")
        if self.padding_idx is not None and not is_int(self.padding_idx):
            self._fail("padding_idx", "an integer or None")
        if self.compression_ratio is not None and (
            not is_number(self.compression_ratio) or self.compression_ratio <= 1
        ):
            self._fail("compression_ratio", "a number > 1 (stored parameters shrink by this factor) or None")
        if not isinstance(self.decoder_hidden_dims, list) or not all(
            is_int(h) and h > 0 for h in self.decoder_hidden_dims
        ):
            self._fail("decoder_hidden_dims", "a list of positive integers (empty for a linear decoder)")
        if self.decoder_bias is not None and not isinstance(self.decoder_bias, bool):
            self._fail("decoder_bias", "True, False or None")
        for name in ("freeze_codes", "compress_output_head", "tied_output_head", "zero_padding_row"):
            if not isinstance(getattr(self, name), bool):
                self._fail(name, "True or False")
        if not is_number(self.embed_scale) or self.embed_scale == 0:
            self._fail("embed_scale", "a finite non-zero number")
        if not isinstance(self.library_version, str):
            self._fail("library_version", "a version string")
        if self.base_model is not None and not isinstance(self.base_model, str):
            self._fail("base_model", "a Hub model id (str) or None")
        if self.calibration_data is not None and not isinstance(self.calibration_data, str):
            self._fail("calibration_data", "a description (str) or None")
        digests = self.tensor_sha256
        if digests is not None and not (isinstance(digests, dict) and all(map(_is_sha256, digests.values()))):
            self._fail("tensor_sha256", "None or {weight name: 64 hexadecimal digits} (written at save)")
        if self.num_embeddings is not None and self.padding_idx is not None:
            if not -self.num_embeddings <= self.padding_idx < self.num_embeddings:
                self._fail("padding_idx", f"an index in [0, {self.num_embeddings}) or None")
        self._validate_packed()
        head = self.output_head
        if head is not None and (not isinstance(head, CompressedEmbeddingConfig) or head.output_head is not None):
            self._fail("output_head", "None, or a CompressedEmbeddingConfig (or its dict) without an output_head")
        if head is not None and (self.tied_output_head or not self.compress_output_head):
            self._fail("output_head", "None with a tied head (it reads these codes) or compress_output_head=False")
        packed = self.codes_dtype == "packed"
        if (
            self.code_dim is not None
            and self.embedding_dim is not None
            and self.code_dim >= self.embedding_dim + packed
        ):
            self._fail("code_dim", f"an integer in [1, {self.embedding_dim}) (smaller than the hidden size)")
        if self.method_class is not None:
            self.method_config.validate()
            self.method_config.check(self)

    def _validate_packed(self) -> None:
        cls = self.method_class
        if cls is not None and getattr(cls, "packed_codes", False) != (self.codes_dtype == "packed"):
            packed = [name for name, other in METHOD_CONFIGS.items() if getattr(other, "packed_codes", False)]
            self._fail("codes_dtype", f"'packed' with method={' or '.join(map(repr, packed))} (and only with it)")
        if (self.code_bits is None) != (self.tier_sizes is None):
            self._fail("code_bits", "set together with tier_sizes (both are filled by the method)")
        if self.code_bits is not None:
            try:
                check_layout(self.code_bits, self.tier_sizes, self.num_embeddings or sum(self.tier_sizes))
            except (ValueError, TypeError) as error:
                self._fail("code_bits", f"a valid packed layout ({error})")

    # ------------------------------------------------------------------ sizes
    @property
    def use_decoder_bias(self) -> bool:
        """The decoder bias actually used: `decoder_bias`, or the method's default."""
        default = getattr(self.method_class, "decoder_bias", self.method != "svd")  # (format 1's rule)
        return default if self.decoder_bias is None else self.decoder_bias

    def decoder_parameters(self, code_dim: int, hidden_size: int) -> int:
        """Number of parameters of the decoder `code_dim -> ... -> hidden_size`."""
        dims = [code_dim, *self.decoder_hidden_dims, hidden_size]
        bias = self.use_decoder_bias
        return sum(a * b + (b if bias else 0) for a, b in zip(dims[:-1], dims[1:]))

    def stored_parameters(self, vocab_size: int, hidden_size: int, code_dim: int) -> int:
        """Parameters stored for the compressed embedding: codes (V x k) + decoder."""
        return vocab_size * code_dim + self.decoder_parameters(code_dim, hidden_size)

    def code_dim_for(self, vocab_size: int, hidden_size: int) -> int:
        """The code width k of a `vocab_size x hidden_size` embedding, as the method sizes it."""
        return self._registered().code_dim_for(self, vocab_size, hidden_size)

    def _registered(self) -> Any:
        if self.method_class is None:
            raise CompressedEmbeddingConfigError(f"method={self.method!r} is not registered: import its package.")
        return self.method_config

    def resolved(self, **facts: Any) -> "CompressedEmbeddingConfig":
        """A copy with the size fixed for `num_embeddings x embedding_dim`, the given layer facts filled in, and the
        choices left to the method (`None`) fixed."""
        new = dataclasses.replace(self, **facts)
        missing = [name for name in ("num_embeddings", "embedding_dim") if getattr(new, name) is None]
        if missing:
            raise CompressedEmbeddingConfigError(
                f"CompressedEmbeddingConfig.resolved needs the size of the embedding; {missing} not given."
            )
        settings, layer_defaults = new._registered().resolved(new)
        object.__setattr__(new, "method_config", settings)
        for name, value in layer_defaults.items():
            if getattr(new, name) is None:
                setattr(new, name, value)
        new.code_dim = new.code_dim_for(new.num_embeddings, new.embedding_dim)
        new.validate()
        return new

    @property
    def is_resolved(self) -> bool:
        return all(getattr(self, name) is not None for name in STRUCTURAL_FIELDS)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the `compressed_embedding` block of config.json; settings nested). A block
        without an `output_head` is written as format 2, which releases before format 3 read too."""
        data = dataclasses.asdict(self)
        data["format_version"] = FORMAT_VERSION if self.output_head is not None else 2
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, require_resolved: bool = False) -> "CompressedEmbeddingConfig":
        """Build from a block (`model.config.compressed_embedding`; format 2, or format 1 whose settings were flat).
        Keys unknown to this version are dropped with a warning; `require_resolved` also requires the layer facts that
        loading a checkpoint needs."""
        if not isinstance(data, dict):
            raise CompressedEmbeddingConfigError(
                f"The `{CONFIG_KEY}` block must be a JSON object, got {type(data).__name__}: {data!r}."
            )
        _check_format_version(data.get("format_version"), data.get("library_version", "?"))
        data = dict(data)
        names = {item.name for item in dataclasses.fields(cls)}
        method = data.get("method", "transform_coding")
        method_class = METHOD_CONFIGS.get(method) if isinstance(method, str) else None
        settings = set() if method_class is None else _setting_names(method_class)
        any_settings = set().union(*map(_setting_names, METHOD_CONFIGS.values()))
        if is_int(data.get("format_version")) and data["format_version"] == 1:  # settings flat, every method's
            flat = {key: data.pop(key) for key in list(data) if key not in names}
            if method_class is None:
                data["method_config"] = flat
            else:
                data["method_config"] = {key: value for key, value in flat.items() if key in settings}
                data.update({key: value for key, value in flat.items() if key not in any_settings})  # reported below
            if data.get("decoder_bias") is None:  # format 1 stored None for "the method's default"
                data["decoder_bias"] = method != "svd"
        if is_int(data.get("format_version")) and 1 <= data["format_version"] < FORMAT_VERSION:
            data["format_version"] = FORMAT_VERSION  # read into this format (library_version still says who wrote it)
        unknown = sorted(set(data) - names - any_settings, key=str)
        if unknown:
            logger.warning(
                f"Ignoring unknown keys {unknown} in the `{CONFIG_KEY}` block (written by compressed_embeddings "
                f"{data.get('library_version', '?')}; this is {__version__})."
            )
        if require_resolved:
            missing = [name for name in STRUCTURAL_FIELDS if data.get(name) is None]
            if missing:
                raise CompressedEmbeddingConfigError(
                    f"The `{CONFIG_KEY}` block of this config.json lacks {missing}, which loading a compressed "
                    "checkpoint needs. The file was edited or truncated: re-create it with `compressed-embeddings "
                    "compress` (or `compress_model(...).save_pretrained(...)`)."
                )
            if isinstance(data.get("output_head"), dict):
                data["output_head"] = cls.from_dict(data["output_head"], require_resolved=True)
        return cls(**{key: value for key, value in data.items() if key in names or key in any_settings})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "CompressedEmbeddingConfig":
        """A named recipe of a registered method, optionally with fields or settings overridden.

        Presets: `"paper"` (the published AutoEncoder recipe, CR 10), `"svd"` (the SVD baseline, CR 10),
        `"transform_coding"` (the default and best-measured method, CR 10 in bytes, `kl_steps=100`, int8 decoder), and
        those of any registered method (`MethodConfig.presets`).

        Example:

        ```python
        >>> CompressedEmbeddingConfig.preset("paper", compression_ratio=5).cosine_weight
        0.1995
        ```
        """
        presets = {
            preset: (method, values)
            for method, method_class in METHOD_CONFIGS.items()
            for preset, values in getattr(method_class, "presets", {}).items()
        }
        if name not in presets:
            raise CompressedEmbeddingConfigError(
                f"Unknown preset {name!r}; available presets: {', '.join(map(repr, sorted(presets)))}."
            )
        method, values = presets[name]
        return cls(**{"method": method, **values, **overrides})


def __getattr__(name: str) -> type:
    # `configuration.CompressedLlamaConfig` -> built on first access (this is what `auto_map` names).
    if name.startswith(CLASS_PREFIX) and name.endswith("Config"):
        base = getattr(transformers, name[len(CLASS_PREFIX) :], None)
        if isinstance(base, type) and issubclass(base, PreTrainedConfig):
            return compressed_config_class(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------- per-family configs
_CONFIG_CLASSES: dict[type, type] = {}


def compressed_config_class(base_config_class: type) -> type:
    """The config class of the compressed variant of a family, e.g. `CompressedLlamaConfig` for `LlamaConfig`.

    It subclasses the base class, so every base field keeps working, and adds the `compressed_embedding`
    field; its `model_type` is `"compressed_" + base model_type`.
    """
    if getattr(base_config_class, "_is_compressed_config", False):
        return base_config_class
    if base_config_class not in _CONFIG_CLASSES:
        if not (isinstance(base_config_class, type) and issubclass(base_config_class, PreTrainedConfig)):
            raise TypeError(f"Expected a transformers config class, got {base_config_class!r}.")
        name = CLASS_PREFIX + base_config_class.__name__
        namespace = {
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": f"`{base_config_class.__name__}` of a model whose token embedding is compressed "
            "(see `CompressedEmbeddingConfig`).",
            "__annotations__": {CONFIG_KEY: dict | None},
            CONFIG_KEY: None,
            "model_type": MODEL_TYPE_PREFIX + base_config_class.model_type,
            "base_config_class": base_config_class,
            "_is_compressed_config": True,
        }
        _CONFIG_CLASSES[base_config_class] = type(name, (base_config_class,), namespace)
    return _CONFIG_CLASSES[base_config_class]
