"""Configuration of a compressed embedding, and the per-family model configs that carry it.

This file travels inside every saved checkpoint (remote code), so it imports only the standard
library, torch/transformers and single-dot siblings.

`CompressedEmbeddingConfig` is plain data: what the user asks for (method, size, decoder shape,
the paper's loss weights and schedule, the training budget) and, once a model is compressed, the
facts the layer needs to be rebuilt (vocabulary size, hidden size, padding index, embedding scale,
whether the output head is tied). It is stored as the `compressed_embedding` block of the model's
`config.json`.

A compressed model has its own `model_type`, `"compressed_" + <base model_type>`, whose config class
subclasses the base family's config (`CompressedLlamaConfig(LlamaConfig)`), so every base field
(`num_labels`, `label2id`, ...) keeps working. Those classes are built on first access by name:
`configuration.CompressedLlamaConfig` works for every family transformers knows.
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

#: Methods that produce codes + decoder. The compression half registers one function per name.
KNOWN_METHODS = ("autoencoder", "svd", "transform_coding")
ACTIVATIONS = ("elu", "gelu", "relu", "silu", "tanh")
SVD_SOLVERS = ("auto", "exact", "randomized")
CODES_DTYPES = ("float32", "float16", "bfloat16", "int8", "packed")
INITS = ("random", "svd")

# Fields that describe the built layer; `compress_model` fills them, loading needs them.
STRUCTURAL_FIELDS = ("num_embeddings", "embedding_dim", "code_dim")


class CompressedEmbeddingConfigError(ValueError):
    """A `CompressedEmbeddingConfig` (or the `compressed_embedding` block of a config.json) is invalid."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    if _is_int(value):  # an int too large for a float is no usable number (and would overflow in arithmetic)
        try:
            value = float(value)
        except OverflowError:
            return False
    return isinstance(value, float) and math.isfinite(value)


def _check_format_version(version: Any, library_version: Any) -> None:
    """Refuse a block written in a newer format before reading anything else of it (its fields may have changed)."""
    if _is_int(version) and version > FORMAT_VERSION:
        raise CompressedEmbeddingConfigError(
            f"This `{CONFIG_KEY}` block has format_version {version} (written by compressed_embeddings "
            f"{library_version}), but this install ({__version__}) reads formats up to {FORMAT_VERSION}. "
            "Upgrade with `pip install -U compressed-embeddings`."
        )


@dataclass
class CompressedEmbeddingConfig:
    r"""
    What to compress a token embedding into, and how.

    The embedding `E` (`V x d`) is replaced by per-token codes `C` (`V x k`) and a small decoder
    (`k -> d`). Give the size either as `code_dim` (k) or as `compression_ratio`; the ratio is counted
    in stored parameters, `V * d / (V * k + decoder parameters)`, and `code_dim` is derived from it as the
    largest k whose ratio is still at least the one asked for. With a linear decoder with bias that is
    `k = floor((V * d / ratio - d) / (V + d))`.

    Args:
        method (`str`, *optional*, defaults to `"transform_coding"`):
            `"transform_coding"` (the default: the best measured method, see `docs/results/quality.md`): codes of a
            few bits per entry (`codes_dtype="packed"`) in a decorrelated basis, with bits allocated where they
            reduce the error most, more bits for frequent tokens, and, given calibration text, the error measured
            where the output head feels it; see the quality guide. Its `compression_ratio` counts bytes: the
            embedding's bytes in the model's dtype / every byte stored. `"autoencoder"`: the paper's
            direction-aware AutoEncoder ("Direction is what you need", Bałazy et al., 2021), with its published
            recipe. `"svd"`: truncated SVD, the baseline; codes are `U_k S_k`, the decoder `V_k^T`.
        code_dim (`int`, *optional*):
            Width k of each token's code. Must be in `[1, d)`.
        compression_ratio (`float`, *optional*):
            Target ratio (> 1), used when `code_dim` is not given. Defaults to 10 when neither is given.
        decoder_hidden_dims (`list[int]`, *optional*, defaults to `[]`):
            Hidden widths of the decoder. Empty means one linear layer, as in the paper.
        decoder_activation (`str`, *optional*, defaults to `"elu"`):
            Activation between decoder layers (only used with hidden layers).
        decoder_bias (`bool`, *optional*):
            Whether decoder layers have a bias. Defaults to the method's choice (autoencoder: yes, SVD: no).
        cosine_weight (`float`, *optional*, defaults to 0.1995):
            Weight of the direction term `mean(1 - cos(x_hat, x))` (the paper's 0.9975 / 5).
        l1_weight (`float`, *optional*, defaults to 0.0025):
            Weight of the "powered L1" term `mean((|x_hat - x| + 1e-10) ** p)`.
        rmse_weight (`float`, *optional*, defaults to 0.0):
            Weight of the RMSE term (0 in the published configuration).
        l1_power_start (`float`, *optional*, defaults to 1.0):
            Initial power p of the L1 term.
        l1_power_end (`float`, *optional*, defaults to 0.1):
            Final power p of the L1 term.
        l1_power_decay_epochs (`int`, *optional*, defaults to 20):
            The power p decays linearly from start to end over that many epochs, then stays at the end value.
        epochs (`int`, *optional*, defaults to 30):
            Passes over the rows of E (the paper's 20 + 10).
        max_steps (`int`, *optional*):
            If set, stop after this many optimiser steps (overrides `epochs`).
        batch_size (`int`, *optional*, defaults to 32):
            Rows per optimiser step.
        learning_rate (`float`, *optional*, defaults to 1e-3):
            Adam learning rate.
        lr_step_epochs (`int`, *optional*, defaults to 4):
            StepLR period: the learning rate is multiplied by `lr_gamma` every `lr_step_epochs` epochs.
        lr_gamma (`float`, *optional*, defaults to 0.5):
            StepLR factor.
        init (`str`, *optional*, defaults to `"random"`):
            Autoencoder initialisation: `"random"` (the paper) or `"svd"` (start from the SVD solution).
        seed (`int`, *optional*, defaults to 1):
            Seed of every random choice; the same seed gives bitwise-equal codes on CPU.
        svd_solver (`str`, *optional*, defaults to `"auto"`):
            `"exact"`, `"randomized"` (for large vocabularies) or `"auto"` (randomized above 50M entries).
        svd_oversamples (`int`, *optional*, defaults to 10):
            Oversampling of the randomized SVD.
        svd_power_iterations (`int`, *optional*, defaults to 4):
            Power iterations of the randomized SVD.
        freeze_codes (`bool`, *optional*, defaults to `True`):
            Whether the codes are frozen when the compressed model is trained (the decoder trains), as in the paper.
        compress_output_head (`bool`, *optional*, defaults to `True`):
            For models whose output head is tied to the input embedding: `True` ties the head to the compressed
            representation; `False` unties it and keeps the original output matrix (the "input only" variant).
        codes_dtype (`str`, *optional*):
            Storage of the codes: `"float16"`, `"bfloat16"`, or `"int8"` with one scale per row (dequantised on the
            fly; frozen). Default: the model's dtype. Counted in `CompressionReport.stored_bytes`. `"packed"` (set by
            and only for `method="transform_coding"`): integers of 0-8 bits indexing per-column codebooks.
        decoder_dtype (`str`, *optional*):
            `"int8"`: a linear decoder's weight is stored as int8 with one scale per code column (`Int8Linear`,
            frozen; scales and bias train); `"float"`: the model's dtype. Default: the method's choice
            (`transform_coding`: int8, the others: float), fixed when the config is resolved.
        first_tier_rows (`int`, *optional*, defaults to 128):
            `transform_coding` with calibration: rows ranked by importance form tiers of this many rows, as many
            again, then doubling; bits go where they buy the most. 0, or no calibration: one tier.
        input_weight (`float`, *optional*, defaults to 1.0):
            `transform_coding`: a row's importance is its token's mean predicted probability plus `input_weight`
            times its frequency in the calibration text.
        kl_steps (`int`, *optional*):
            `transform_coding`: Adam steps fitting the codebooks and decoder (not the codes) to the original head's
            next-token distribution on calibration hidden states (tied head only; skipped without them). Default:
            100 for `transform_coding`, fixed when the config is resolved.
        code_bits (`list[list[int]]`, *optional*):
            Bits of each code column, per tier (packed codes). Filled by the method; not meant to be set by hand.
        tier_sizes (`list[int]`, *optional*):
            Rows in each tier (packed codes). Filled by the method; not meant to be set by hand.
        num_embeddings (`int`, *optional*):
            Rows V of the replaced embedding. Filled by `compress_model`; not meant to be set by hand.
        embedding_dim (`int`, *optional*):
            Width d of the replaced embedding. Filled by `compress_model`; not meant to be set by hand.
        padding_idx (`int`, *optional*):
            Its padding index. Filled by `compress_model`; not meant to be set by hand.
        embed_scale (`float`, *optional*):
            Scale of looked-up rows (Gemma: sqrt(d)). Filled by `compress_model`; not meant to be set by hand.
        tied_output_head (`bool`, *optional*):
            Whether the output head is tied to it. Filled by `compress_model`; not meant to be set by hand.
        zero_padding_row (`bool`, *optional*):
            Whether its padding row was zero. Filled by `compress_model`; not meant to be set by hand.
        calibration_data (`str`, *optional*):
            What the calibration statistics were measured on (e.g. `"Brown corpus, calibration split (16,384
            tokens)"`), for the model card. Filled by `compress_model`; `None`: no calibration (or another method).
        base_model (`str`, *optional*):
            Hub id of the model that was compressed (the model card's `base_model`). `compress_model` fills it from
            `config._name_or_path` when that is a Hub id rather than a local folder; set it to name a local copy's
            Hub origin.

    Example:

    ```python
    >>> from compressed_embeddings import CompressedEmbeddingConfig
    >>> config = CompressedEmbeddingConfig(method="svd", compression_ratio=5)
    >>> config.code_dim_for(vocab_size=30522, hidden_size=768)
    149
    ```
    """

    method: str = field(default="transform_coding", metadata={"help": f"One of {KNOWN_METHODS}."})
    code_dim: int | None = field(default=None, metadata={"help": "Width k of the codes."})
    compression_ratio: float | None = field(default=None, metadata={"help": "Target V*d / stored parameters."})
    decoder_hidden_dims: list[int] = field(default_factory=list, metadata={"help": "Hidden decoder widths."})
    decoder_activation: str = field(default="elu", metadata={"help": f"One of {ACTIVATIONS}."})
    decoder_bias: bool | None = field(default=None, metadata={"help": "Decoder bias; None = method default."})
    cosine_weight: float = field(default=0.1995, metadata={"help": "Weight of mean(1 - cos)."})
    l1_weight: float = field(default=0.0025, metadata={"help": "Weight of the powered L1 term."})
    rmse_weight: float = field(default=0.0, metadata={"help": "Weight of the RMSE term."})
    l1_power_start: float = field(default=1.0, metadata={"help": "Initial power of the L1 term."})
    l1_power_end: float = field(default=0.1, metadata={"help": "Final power of the L1 term."})
    l1_power_decay_epochs: int = field(default=20, metadata={"help": "Epochs of linear power decay."})
    epochs: int = field(default=30, metadata={"help": "Training epochs over the rows of E."})
    max_steps: int | None = field(default=None, metadata={"help": "Stop after this many steps."})
    batch_size: int = field(default=32, metadata={"help": "Rows per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate."})
    lr_step_epochs: int = field(default=4, metadata={"help": "StepLR period in epochs."})
    lr_gamma: float = field(default=0.5, metadata={"help": "StepLR factor."})
    init: str = field(default="random", metadata={"help": f"One of {INITS}."})
    seed: int = field(default=1, metadata={"help": "Random seed."})
    svd_solver: str = field(default="auto", metadata={"help": f"One of {SVD_SOLVERS}."})
    svd_oversamples: int = field(default=10, metadata={"help": "Randomized SVD oversampling."})
    svd_power_iterations: int = field(default=4, metadata={"help": "Randomized SVD power iterations."})
    freeze_codes: bool = field(default=True, metadata={"help": "Freeze codes during fine-tuning."})
    compress_output_head: bool = field(default=True, metadata={"help": "Tie a tied head to the codes."})
    codes_dtype: str | None = field(default=None, metadata={"help": f"Codes storage: None or one of {CODES_DTYPES}."})
    decoder_dtype: str | None = field(
        default=None, metadata={"help": "Decoder weight storage: 'float', 'int8' or None (the method's)."}
    )
    first_tier_rows: int = field(default=128, metadata={"help": "transform_coding: rows in the first tier."})
    input_weight: float = field(default=1.0, metadata={"help": "transform_coding: weight of input frequency."})
    kl_steps: int | None = field(default=None, metadata={"help": "transform_coding: steps fitting to the logits."})
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
    format_version: int = field(default=FORMAT_VERSION, metadata={"help": "Version of this block's format."})
    library_version: str = field(default=__version__, metadata={"help": "compressed_embeddings that wrote it."})

    def __post_init__(self) -> None:
        if self.code_dim is None and self.compression_ratio is None:
            self.compression_ratio = 10.0
        if self.method == "transform_coding" and self.codes_dtype is None:
            self.codes_dtype = "packed"
        if isinstance(self.decoder_hidden_dims, tuple):
            self.decoder_hidden_dims = list(self.decoder_hidden_dims)
        self.validate()

    # ------------------------------------------------------------------ validation
    def _fail(self, name: str, allowed: str) -> None:
        raise CompressedEmbeddingConfigError(
            f"CompressedEmbeddingConfig.{name} is invalid: got {getattr(self, name)!r}; expected {allowed}."
        )

    def validate(self) -> None:
        """Check every field; raise `CompressedEmbeddingConfigError` naming the field, the value and what is
        allowed."""
        _check_format_version(self.format_version, self.library_version)
        choices = {
            "method": KNOWN_METHODS,
            "decoder_activation": ACTIVATIONS,
            "svd_solver": SVD_SOLVERS,
            "init": INITS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                self._fail(name, f"one of {', '.join(map(repr, allowed))}")
        if self.codes_dtype is not None and self.codes_dtype not in CODES_DTYPES:
            self._fail("codes_dtype", f"None or one of {', '.join(map(repr, CODES_DTYPES))}")
        if self.codes_dtype == "int8" and not self.freeze_codes:
            self._fail("codes_dtype", "a float dtype when freeze_codes=False (int8 codes cannot be trained)")
        if self.decoder_dtype not in (None, "float", "int8") or (
            self.decoder_dtype == "int8" and self.decoder_hidden_dims
        ):
            self._fail("decoder_dtype", "None, 'float', or 'int8' with a linear decoder (decoder_hidden_dims=[])")
        positive_ints = ("epochs", "batch_size", "lr_step_epochs", "svd_power_iterations", "format_version")
        for name in positive_ints:
            value = getattr(self, name)
            if not _is_int(value) or value < (0 if name == "svd_power_iterations" else 1):
                self._fail(name, "a positive integer" if name != "svd_power_iterations" else "an integer >= 0")
        for name in ("l1_power_decay_epochs", "svd_oversamples", "seed"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                self._fail(name, "an integer >= 0")
        for name in ("code_dim", "max_steps", "num_embeddings", "embedding_dim"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                self._fail(name, "a positive integer or None")
        if self.padding_idx is not None and not _is_int(self.padding_idx):
            self._fail("padding_idx", "an integer or None")
        if self.compression_ratio is not None and (
            not _is_number(self.compression_ratio) or self.compression_ratio <= 1
        ):
            self._fail("compression_ratio", "a number > 1 (stored parameters shrink by this factor) or None")
        if not isinstance(self.decoder_hidden_dims, list) or not all(
            _is_int(h) and h > 0 for h in self.decoder_hidden_dims
        ):
            self._fail("decoder_hidden_dims", "a list of positive integers (empty for a linear decoder)")
        for name in ("decoder_bias",):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                self._fail(name, "True, False or None")
        for name in ("freeze_codes", "compress_output_head", "tied_output_head", "zero_padding_row"):
            if not isinstance(getattr(self, name), bool):
                self._fail(name, "True or False")
        for name in ("cosine_weight", "l1_weight", "rmse_weight", "l1_power_start", "l1_power_end", "lr_gamma"):
            if not _is_number(getattr(self, name)) or getattr(self, name) < 0:
                self._fail(name, "a finite number >= 0")
        if not _is_number(self.learning_rate) or self.learning_rate <= 0:
            self._fail("learning_rate", "a finite number > 0")
        if not _is_number(self.embed_scale) or self.embed_scale == 0:
            self._fail("embed_scale", "a finite non-zero number")
        if self.method == "autoencoder" and self.cosine_weight + self.l1_weight + self.rmse_weight == 0:
            self._fail("cosine_weight", "a positive weight on at least one loss term (cosine, l1 or rmse)")
        if not isinstance(self.library_version, str):
            self._fail("library_version", "a version string")
        if self.base_model is not None and not isinstance(self.base_model, str):
            self._fail("base_model", "a Hub model id (str) or None")
        if self.calibration_data is not None and not isinstance(self.calibration_data, str):
            self._fail("calibration_data", "a description (str) or None")
        if self.num_embeddings is not None and self.padding_idx is not None:
            if not -self.num_embeddings <= self.padding_idx < self.num_embeddings:
                self._fail("padding_idx", f"an index in [0, {self.num_embeddings}) or None")
        self._validate_packed()
        packed = self.codes_dtype == "packed"
        if (
            self.code_dim is not None
            and self.embedding_dim is not None
            and self.code_dim >= self.embedding_dim + packed
        ):
            self._fail("code_dim", f"an integer in [1, {self.embedding_dim}) (smaller than the hidden size)")

    def _validate_packed(self) -> None:
        transform = self.method == "transform_coding"
        if transform != (self.codes_dtype == "packed"):
            self._fail("codes_dtype", "'packed' with method='transform_coding' (and only with it)")
        if not _is_int(self.first_tier_rows) or self.first_tier_rows < 0:
            self._fail("first_tier_rows", "an integer >= 0")
        if not _is_number(self.input_weight) or not 0 <= self.input_weight < float("inf"):
            self._fail("input_weight", "a finite number >= 0")
        if self.kl_steps is not None and (not _is_int(self.kl_steps) or self.kl_steps < 0):
            self._fail("kl_steps", "an integer >= 0 or None")
        if not transform:
            return
        if self.compression_ratio is None:
            self._fail(
                "code_dim",
                "unset with method='transform_coding' (the default method), which keeps all components and is sized "
                "by compression_ratio; for codes of width k pass method='autoencoder' (the paper's) or 'svd'",
            )
        if self.decoder_hidden_dims:
            self._fail("decoder_hidden_dims", "[] (transform_coding's decoder is linear)")
        if not self.freeze_codes:
            self._fail("freeze_codes", "True with method='transform_coding' (packed integer codes cannot be trained)")
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
        return self.decoder_bias if self.decoder_bias is not None else self.method != "svd"

    def decoder_parameters(self, code_dim: int, hidden_size: int) -> int:
        """Number of parameters of the decoder `code_dim -> ... -> hidden_size`."""
        dims = [code_dim, *self.decoder_hidden_dims, hidden_size]
        bias = self.use_decoder_bias
        return sum(a * b + (b if bias else 0) for a, b in zip(dims[:-1], dims[1:]))

    def stored_parameters(self, vocab_size: int, hidden_size: int, code_dim: int) -> int:
        """Parameters stored for the compressed embedding: codes (V x k) + decoder."""
        return vocab_size * code_dim + self.decoder_parameters(code_dim, hidden_size)

    def code_dim_for(self, vocab_size: int, hidden_size: int) -> int:
        """The code width k for an embedding of `vocab_size x hidden_size` (from `code_dim` or the ratio)."""
        if self.method == "transform_coding":  # k = d; the ratio sets the bits per entry instead
            if self.code_dim not in (None, hidden_size):
                raise CompressedEmbeddingConfigError(
                    f"CompressedEmbeddingConfig.code_dim is invalid: got {self.code_dim}; method='transform_coding' "
                    f"keeps all {hidden_size} components and sizes its codes by compression_ratio: leave code_dim "
                    "unset."
                )
            return hidden_size
        if self.code_dim is not None:
            k = self.code_dim
        else:
            ratio = self.compression_ratio
            k = 0
            lo, hi = 1, hidden_size
            while lo <= hi:  # largest k whose stored parameters fit the budget
                mid = (lo + hi) // 2
                if vocab_size * hidden_size / self.stored_parameters(vocab_size, hidden_size, mid) >= ratio:
                    k, lo = mid, mid + 1
                else:
                    hi = mid - 1
            if k < 1:
                best = vocab_size * hidden_size / self.stored_parameters(vocab_size, hidden_size, 1)
                raise CompressedEmbeddingConfigError(
                    f"CompressedEmbeddingConfig.compression_ratio is invalid: got {self.compression_ratio!r}; for an "
                    f"embedding of {vocab_size} x {hidden_size} the highest ratio reachable is {best:.2f} "
                    "(code_dim=1). "
                    "Ask for a smaller ratio."
                )
        if k >= hidden_size:
            raise CompressedEmbeddingConfigError(
                f"CompressedEmbeddingConfig.code_dim is invalid: got {k}; expected an integer in [1, {hidden_size}) "
                f"(smaller than the hidden size {hidden_size}, or nothing is compressed)."
            )
        return k

    def resolved(self, **facts: Any) -> "CompressedEmbeddingConfig":
        """A copy with the size fixed for `num_embeddings x embedding_dim` and the given layer facts filled in."""
        new = dataclasses.replace(self, **facts)
        missing = [name for name in ("num_embeddings", "embedding_dim") if getattr(new, name) is None]
        if missing:
            raise CompressedEmbeddingConfigError(
                f"CompressedEmbeddingConfig.resolved needs the size of the embedding; {missing} not given."
            )
        new.code_dim = new.code_dim_for(new.num_embeddings, new.embedding_dim)
        transform = new.method == "transform_coding"
        if new.decoder_dtype is None:
            new.decoder_dtype = "int8" if transform and not new.decoder_hidden_dims else "float"
        if new.kl_steps is None:
            new.kl_steps = 100 if transform else 0
        new.validate()
        return new

    @property
    def is_resolved(self) -> bool:
        return all(getattr(self, name) is not None for name in STRUCTURAL_FIELDS)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the `compressed_embedding` block of config.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, require_resolved: bool = False) -> "CompressedEmbeddingConfig":
        """Build from a dict. Keys unknown to this version are dropped with a warning.

        Args:
            data: the block, e.g. `model.config.compressed_embedding`.
            require_resolved: also require the layer facts that loading a checkpoint needs.
        """
        if not isinstance(data, dict):
            raise CompressedEmbeddingConfigError(
                f"The `{CONFIG_KEY}` block must be a JSON object, got {type(data).__name__}: {data!r}."
            )
        names = {f.name for f in dataclasses.fields(cls)}
        _check_format_version(data.get("format_version"), data.get("library_version", "?"))
        unknown = sorted(set(data) - names, key=str)
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
        kwargs = {k: v for k, v in data.items() if k in names}
        try:
            return cls(**kwargs)
        except TypeError as error:  # pragma: no cover - dataclass signature errors
            raise CompressedEmbeddingConfigError(f"Invalid `{CONFIG_KEY}` block: {error}") from None

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "CompressedEmbeddingConfig":
        """A named recipe, optionally with fields overridden.

        Presets: `"paper"` (the published AutoEncoder recipe, CR 10), `"svd"` (the SVD baseline, CR 10),
        `"transform_coding"` (the default and best-measured method, CR 10 in bytes, `kl_steps=100`, int8 decoder).

        Example:

        ```python
        >>> CompressedEmbeddingConfig.preset("paper", compression_ratio=5).cosine_weight
        0.1995
        ```
        """
        presets: dict[str, dict[str, Any]] = {
            "paper": {"method": "autoencoder"},
            "svd": {"method": "svd"},
            "transform_coding": {"method": "transform_coding"},
        }
        if name not in presets:
            raise CompressedEmbeddingConfigError(
                f"Unknown preset {name!r}; available presets: {', '.join(map(repr, sorted(presets)))}."
            )
        return cls(**{**presets[name], **overrides})


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


def __getattr__(name: str) -> type:
    # `configuration.CompressedLlamaConfig` -> built on first access (this is what `auto_map` names).
    if name.startswith(CLASS_PREFIX) and name.endswith("Config"):
        base = getattr(transformers, name[len(CLASS_PREFIX) :], None)
        if isinstance(base, type) and issubclass(base, PreTrainedConfig):
            return compressed_config_class(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
