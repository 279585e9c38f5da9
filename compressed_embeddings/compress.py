"""Model surgery: `compress_model` replaces a model's token embedding in place; `decompress_model` undoes it.

Works on any `PreTrainedModel` whose `get_input_embeddings()` is a lookup table (`nn.Embedding` or a
subclass whose output is the looked-up row times a constant, like Gemma's scaled embedding).
"""

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.utils import logging

from .auto import register_model_class
from .calibration import CalibrationStats, resolve_calibration
from .configuration import CONFIG_KEY, CompressedEmbeddingConfig, compressed_config_class
from .evaluation import embedding_fidelity
from .hub import hub_model_id
from .layer import CompressedEmbedding, CompressedOutputHead
from .methods import run_method, uses_calibration
from .modeling import CompressedModelMixin, compressed_model_class, head_is_tied, install_compressed_embedding

logger = logging.get_logger(__name__)


class UnsupportedModelError(ValueError):
    """The model's embedding cannot be compressed by this library (the message says why)."""


@dataclass
class CompressionReport:
    """What a compression cost and what it kept.

    Bytes are counted against the embedding in the model's own dtype (`dtype`, `original_bytes`, `bytes_ratio`),
    with fp32 and bf16 beside. `runtime_bytes` is what the layer holds while a model runs: the stored tensors plus,
    for packed codes, their runtime layout (the integer matrices a tied head multiplies; see `packed_runtime`).
    `stage_seconds` times the stages: calibration (by `compress_model`), the method's own (transform coding:
    transform, allocation, quantisation, fitting), building the layer and measuring its fidelity. `output_head` is
    the report of an untied output head compressed with its own codes.
    """

    method: str
    num_embeddings: int
    embedding_dim: int
    code_dim: int
    original_parameters: int
    stored_parameters: int
    compression_ratio: float
    mean_cosine: float
    min_cosine: float
    relative_frobenius_error: float
    norm_ratio: float
    wall_time_s: float
    loss_history: list[float] = field(default_factory=list)
    stored_bytes: int = 0
    bytes_ratio_vs_fp32: float = 0.0
    bytes_ratio_vs_bf16: float = 0.0
    config: CompressedEmbeddingConfig | None = None
    dtype: str = "float32"
    original_bytes: int = 0
    bytes_ratio: float = 0.0
    runtime_bytes: int = 0
    mean_bits: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    output_head: "CompressionReport | None" = None

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        if self.mean_bits is not None:  # packed integer codes: parameters are bytes, not values; say the bits
            size = f"packed codes {self.num_embeddings} x {self.code_dim} ({self.mean_bits:.2f} bits each) + decoder ("
        else:
            size = (
                f"codes {self.num_embeddings} x {self.code_dim} + decoder; {self.original_parameters:,} -> "
                f"{self.stored_parameters:,} parameters (ratio {self.compression_ratio:.2f}x; "
            )
        per_row = self.stored_bytes / self.num_embeddings
        running = ""
        if self.runtime_bytes > self.stored_bytes:
            running = f", {self.runtime_bytes / self.num_embeddings:.0f} bytes per row while running"
        head = "" if self.output_head is None else f"\noutput head (own codes): {self.output_head}"
        return (
            f"{self.method}: {self.num_embeddings} x {self.embedding_dim} -> {size}"
            f"{self.original_bytes / 2**20:.2f} -> {self.stored_bytes / 2**20:.2f} MiB in {self.dtype}, "
            f"{self.bytes_ratio:.2f}x; {self.bytes_ratio_vs_fp32:.2f}x vs fp32; {per_row:.0f} bytes per row stored"
            f"{running}); mean cosine {self.mean_cosine:.4f} (min {self.min_cosine:.4f}), "
            f"relative Frobenius error {self.relative_frobenius_error:.4f}; {self.wall_time_s:.1f} s{head}"
        )


def compress_embedding(
    matrix: torch.Tensor,
    config: CompressedEmbeddingConfig,
    *,
    dtype: torch.dtype = torch.float32,
    show_progress: bool = True,
    calibration: CalibrationStats | None = None,
) -> tuple[CompressedEmbedding, CompressionReport]:
    """Compress an embedding matrix (V x d) into a `CompressedEmbedding` and report what it cost and kept.

    `calibration` ([`collect_calibration`]) feeds methods that use it (`transform_coding`). The report's `config` is
    the resolved config the layer was built from (with the layout a method chose).

    Example:

    ```python
    >>> import torch
    >>> from compressed_embeddings import CompressedEmbeddingConfig, compress_embedding
    >>> matrix = torch.randn(1000, 64)
    >>> layer, report = compress_embedding(matrix, CompressedEmbeddingConfig(method="svd", code_dim=63))
    >>> layer.codes.shape
    torch.Size([1000, 63])
    ```
    """
    if matrix.dim() != 2:
        raise ValueError(f"Expected an embedding matrix of shape (V, d), got shape {tuple(matrix.shape)}.")
    matrix = matrix.detach().to("cpu", torch.float32)
    _check_finite(matrix)
    if not config.is_resolved:
        config = config.resolved(num_embeddings=matrix.shape[0], embedding_dim=matrix.shape[1])
    start = time.perf_counter()
    output = run_method(matrix, config, show_progress=show_progress, calibration=calibration, dtype=dtype)
    stages = dict(output.stage_seconds) or {"method": time.perf_counter() - start}
    if output.config_updates:  # the layout the method chose (packed codes: bits and tiers)
        config = replace(config, **output.config_updates)
    layer = CompressedEmbedding.from_config(config, dtype=dtype)
    with torch.no_grad():
        if output.packed is not None:
            layer.packed.set_codes(**output.packed)
        else:
            layer.set_codes(output.codes)
        layer.load_decoder_state(output.decoder_state)
    wall_time = time.perf_counter() - start
    stages["layer"] = wall_time - sum(stages.values())
    with torch.no_grad():
        fidelity = embedding_fidelity(matrix, layer.decoded_rows)  # decodes chunk by chunk: no second V x d copy
    stages["fidelity"] = time.perf_counter() - start - wall_time
    stored = layer.stored_parameters()
    stored_bytes = layer.stored_bytes()
    runtime = layer.packed_runtime()
    original_bytes = matrix.numel() * dtype.itemsize
    report = CompressionReport(
        method=config.method,
        num_embeddings=matrix.shape[0],
        embedding_dim=matrix.shape[1],
        code_dim=config.code_dim,
        original_parameters=matrix.numel(),
        stored_parameters=stored,
        compression_ratio=matrix.numel() / stored,
        mean_cosine=fidelity.mean_cosine,
        min_cosine=fidelity.min_cosine,
        relative_frobenius_error=fidelity.relative_frobenius_error,
        norm_ratio=fidelity.norm_ratio,
        wall_time_s=wall_time,
        loss_history=output.loss_history,
        stored_bytes=stored_bytes,
        bytes_ratio_vs_fp32=layer.compression_ratio(torch.float32),
        bytes_ratio_vs_bf16=layer.compression_ratio(torch.bfloat16),
        config=config,
        dtype=str(dtype).removeprefix("torch."),
        original_bytes=original_bytes,
        bytes_ratio=layer.compression_ratio(dtype),
        runtime_bytes=stored_bytes + (runtime.nbytes() if runtime is not None else 0),
        mean_bits=layer.packed.mean_bits if layer.codes is None else None,
        stage_seconds=stages,
    )
    return layer, report


def embedding_rows(model: PreTrainedModel) -> "torch.Tensor | Callable[[int, int], torch.Tensor]":
    """A model's input-embedding rows, as [`embedding_fidelity`] takes them: the `V x d` weight of a plain embedding,
    or a `(start, stop) -> rows` function decoding a `CompressedEmbedding` on demand (never the whole matrix)."""
    embedding = model.get_input_embeddings()
    if isinstance(embedding, CompressedEmbedding):
        return embedding.decoded_rows
    return embedding.weight.detach()


def _check_finite(matrix: torch.Tensor, chunk_rows: int = 16384) -> None:
    bad = torch.cat(
        [
            (~torch.isfinite(matrix[start : start + chunk_rows])).any(dim=1).nonzero().flatten() + start
            for start in range(0, matrix.shape[0], chunk_rows)
        ]
    )
    if bad.numel():
        raise ValueError(
            f"The embedding has {bad.numel()} row(s) with NaN or Inf values (token ids {bad[:10].tolist()}"
            f"{' ...' if bad.numel() > 10 else ''}). Fix or re-initialise those rows before compressing."
        )


def _input_embedding(model: PreTrainedModel) -> nn.Module:
    try:
        embedding = model.get_input_embeddings()
    except (NotImplementedError, AttributeError):
        embedding = None
    if embedding is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} exposes no input embeddings (`get_input_embeddings()` is not implemented or "
            "returns None), so there is no token embedding to compress. Pass a text model that has one."
        )
    if isinstance(embedding, CompressedEmbedding):
        raise UnsupportedModelError(
            f"{type(model).__name__} is already compressed. Call `decompress_model(model)` first to re-compress."
        )
    weight = getattr(embedding, "weight", None)
    if not isinstance(embedding, nn.Embedding) or not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise UnsupportedModelError(
            f"The input embedding of {type(model).__name__} is a {type(embedding).__name__}, not a lookup table "
            "(`nn.Embedding` or a subclass), so it cannot be replaced by codes + decoder."
        )
    if embedding.max_norm is not None:
        raise UnsupportedModelError(
            f"The input embedding of {type(model).__name__} uses max_norm={embedding.max_norm}, which renormalises "
            "rows at lookup time; this is not supported."
        )
    for other_name, other in model.named_modules():
        if other is not embedding and getattr(other, "weight", None) is weight and not _is_output_head(model, other):
            raise UnsupportedModelError(
                f"The input embedding's matrix is also used by `{other_name}` ({type(other).__name__}), a module that "
                "is neither the input embedding nor the output head; sharing it three ways (as encoder-decoder "
                "models do) is not supported yet."
            )
    return embedding


def _is_output_head(model: PreTrainedModel, module: nn.Module) -> bool:
    return model.get_output_embeddings() is module


def _embedding_scale(embedding: nn.Embedding) -> float:
    """The constant by which `embedding(ids)` multiplies the looked-up rows (1.0 for `nn.Embedding`)."""
    if type(embedding) is nn.Embedding:
        return 1.0
    probe = torch.arange(min(embedding.num_embeddings, 16), device=embedding.weight.device)
    with torch.no_grad():
        out = embedding(probe).float()
        rows = F.embedding(probe, embedding.weight).float()
    scale = (out * rows).sum() / (rows * rows).sum().clamp_min(1e-30)
    if not torch.allclose(out, rows * scale, rtol=1e-2, atol=1e-5):
        raise UnsupportedModelError(
            f"The input embedding is a {type(embedding).__name__} whose output is not its looked-up rows times a "
            "constant, so codes + decoder cannot reproduce it."
        )
    return float(getattr(embedding, "scalar_embed_scale", scale))


def compress_model(
    model: PreTrainedModel,
    config: CompressedEmbeddingConfig | None = None,
    *,
    show_progress: bool = True,
    calibration: CalibrationStats | str | None = "generic",
    tokenizer: Any = None,
) -> PreTrainedModel:
    """Replace `model`'s token embedding by codes + decoder, in place, and return the model.

    The model becomes an instance of its compressed class (`LlamaForCausalLM` -> `CompressedLlamaForCausalLM`,
    config `CompressedLlamaConfig` with a `compressed_embedding` block), so `save_pretrained` writes a checkpoint
    that `AutoModel*` classes load back. A tied output head stays tied to the compressed representation; an untied
    head is compressed too, with codes of its own (as `config.output_head` says, by default as the input embedding),
    calibrated as a head. `config.compress_output_head=False` keeps the head's original matrix (a tied one is
    untied). The report is stored as `model.compression_report` (the head's as its `output_head`).

    With no `config`, the default `CompressedEmbeddingConfig()` is used: transform coding at ratio 10, the best
    measured method (`docs/results/quality.md`). `calibration` feeds the methods that use it (`transform_coding`):
    `"generic"` (default) measures this model on the package's own generic text ([`generic_calibration`], fetched
    once and cached) with `tokenizer` (default: loaded from `model.name_or_path`); a [`CalibrationStats`] from
    [`collect_calibration`] on your own text; `None` for none (data-free: the model's own generated text,
    [`self_generated_calibration`], or for a model that cannot generate random token ids), with a warning stating
    what that costs. Without a tokenizer or the text (offline, nothing cached), `"generic"` falls back to data-free.

    Example:

    ```python
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from compressed_embeddings import CompressedEmbeddingConfig, compress_model
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=37,
    ...     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))
    >>> model = compress_model(model, CompressedEmbeddingConfig(method="svd", code_dim=8), show_progress=False)
    >>> type(model).__name__, model.config.model_type
    ('CompressedLlamaForCausalLM', 'compressed_llama')
    ```
    """
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"compress_model expects a transformers PreTrainedModel, got {type(model).__name__}.")
    if isinstance(model, CompressedModelMixin):
        raise UnsupportedModelError(
            f"{type(model).__name__} is already compressed. Call `decompress_model(model)` first to re-compress."
        )
    chosen_by_default = config is None
    config = config if config is not None else CompressedEmbeddingConfig()
    embedding = _input_embedding(model)
    weight = embedding.weight.detach()
    if weight.device.type == "meta":
        raise UnsupportedModelError("The model's embedding is on the meta device; load real weights first.")
    scale = _embedding_scale(embedding)
    tied = head_is_tied(model)
    if tied and not config.compress_output_head:
        head = model.get_output_embeddings()
        head.weight = nn.Parameter(weight.clone())
        if getattr(head, "bias", None) is not None:  # e.g. BERT's decoder bias, shared with `cls.predictions.bias`
            head.bias = nn.Parameter(head.bias.detach().clone())
        model.config.get_text_config().tie_word_embeddings = False
        model.config.tie_word_embeddings = False
        model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True)
        tied = False
    head = _untied_head(model, config) if not tied else None
    if config.output_head is not None and head is None:
        logger.warning(
            f"config.output_head is ignored: the output head of {type(model).__name__} is "
            f"{'tied to the input embedding (it reads its codes)' if tied else 'absent or not a V x d matrix'}."
        )
    padding_idx = embedding.padding_idx
    spec = config.resolved(
        output_head=None,
        num_embeddings=weight.shape[0],
        embedding_dim=weight.shape[1],
        padding_idx=padding_idx,
        embed_scale=scale,
        tied_output_head=tied,
        zero_padding_row=bool(padding_idx is not None and not weight[padding_idx].any()),
        base_model=config.base_model or hub_model_id(model.config.name_or_path),
    )
    head_spec = None
    if head is not None:
        head_spec = (config.output_head or replace(config, output_head=None)).resolved(
            num_embeddings=head.weight.shape[0], embedding_dim=head.weight.shape[1], padding_idx=None, embed_scale=1.0,
            tied_output_head=True, zero_padding_row=False, base_model=None, output_head=None,
        )  # fmt: skip
    calibration_start = time.perf_counter()
    if uses_calibration(spec.method) or (head_spec is not None and uses_calibration(head_spec.method)):
        calibration = resolve_calibration(model, calibration, tokenizer, show_progress=show_progress)
        spec = replace(spec, calibration_data=calibration.source if calibration is not None else None)
    else:
        calibration = calibration if isinstance(calibration, CalibrationStats) else None
    line = choice_line(spec)
    if head_spec is not None:
        line += f" The untied output head is compressed too, with codes of its own ({head_spec.method})."
    (logger.warning if chosen_by_default else logger.info)(line)
    calibration_seconds = time.perf_counter() - calibration_start
    layer, report = compress_embedding(
        weight, spec, dtype=weight.dtype, show_progress=show_progress, calibration=calibration
    )
    report.stage_seconds = {"calibration": calibration_seconds, **report.stage_seconds}
    spec, head_layer = report.config, None
    if head_spec is not None:
        head_spec = replace(head_spec, calibration_data=spec.calibration_data)
        head_layer, report.output_head = compress_embedding(
            head.weight.detach(), head_spec, dtype=weight.dtype, show_progress=show_progress, calibration=calibration
        )
        spec = replace(spec, output_head=report.output_head.config)
        report.config = spec
    register_model_class(type(model))
    _become_compressed(model, layer, spec, tie_head=tied, head=head_layer)
    model.compression_report = report
    logger.info(str(report))
    return model


def _untied_head(model: PreTrainedModel, config: CompressedEmbeddingConfig) -> nn.Module | None:
    """The untied output head `compress_model` compresses too: a module holding a `V x d` matrix (`nn.Linear`-like),
    when `config.compress_output_head` asks for it."""
    head = model.get_output_embeddings() if config.compress_output_head else None
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        return None
    _check_finite(weight.detach().float())
    return head


def _become_compressed(
    model: PreTrainedModel,
    layer: CompressedEmbedding,
    spec: CompressedEmbeddingConfig,
    tie_head: bool,
    head: CompressedEmbedding | None = None,
) -> None:
    """Make `model` (in place) the compressed model `spec` describes: its class and config class become the compressed
    family's (`CompressedLlamaForCausalLM`, `CompressedLlamaConfig`), the config carries `spec`, and `layer` (and an
    untied head's own `head`) is installed (`install_compressed_embedding`)."""
    model.config.__class__ = compressed_config_class(type(model.config))
    setattr(model.config, CONFIG_KEY, spec.to_dict())
    model.__class__ = compressed_model_class(type(model))
    install_compressed_embedding(model, layer, tie_head=tie_head, head=head)


def choice_line(spec: CompressedEmbeddingConfig) -> str:
    """One line: which method compresses, why (its `summary`), its size, and on what it was calibrated."""
    summary = getattr(spec.method_class, "summary", "")
    why = f" ({summary})" if summary else ""
    size = f" at code width k={spec.code_dim}" if spec.code_dim is not None and spec.codes_dtype != "packed" else ""
    data = ""
    if uses_calibration(spec.method):
        data = f", calibrated on {spec.calibration_data}" if spec.calibration_data else ", data-free"
    return f"Compressing with {spec.method}{why}{size}{data}."


def decompress_model(model: PreTrainedModel) -> PreTrainedModel:
    """Turn a compressed model back into its stock architecture (a plain lookup table holding the decoded
    matrix), in place, for runtimes that only know stock models. Returns the model.

    Example:

    ```python
    >>> model = decompress_model(model)  # doctest: +SKIP
    >>> type(model).__name__  # doctest: +SKIP
    'LlamaForCausalLM'
    ```
    """
    if not isinstance(model, CompressedModelMixin):
        raise ValueError(f"{type(model).__name__} is not a compressed model; there is nothing to decompress.")
    layer = model.get_input_embeddings()
    head = model.get_output_embeddings()
    base_class = type(model).base_model_class
    block = getattr(model.config, CONFIG_KEY)
    with torch.no_grad():
        weight = layer.weight.detach().clone()
    model.config.__class__ = type(model.config).base_config_class
    model.config.__dict__.pop(CONFIG_KEY, None)
    model.config.__dict__.pop("auto_map", None)
    with torch.device("meta"):
        skeleton = base_class(model.config)
    embedding = copy.deepcopy(skeleton.get_input_embeddings()).to_empty(device=weight.device)
    embedding.weight = nn.Parameter(weight)
    for name, buffer in embedding.named_buffers():
        if name == "embed_scale":
            buffer.fill_(layer.embed_scale)
        else:
            raise UnsupportedModelError(f"Cannot rebuild buffer {name!r} of {type(embedding).__name__}.")
    probe = torch.arange(min(layer.num_embeddings, 16), device=weight.device)
    with torch.no_grad():
        if not torch.allclose(embedding(probe), layer(probe), rtol=1e-4, atol=1e-5):
            model.config.__class__ = compressed_config_class(type(model.config))
            setattr(model.config, CONFIG_KEY, block)
            raise UnsupportedModelError(f"Rebuilding a stock {type(embedding).__name__} did not reproduce the layer.")
    model.__class__ = base_class
    model.__dict__.pop("_tied_weights_keys", None)
    model.__dict__.pop("compression_report", None)
    model.set_input_embeddings(embedding)
    if isinstance(head, CompressedOutputHead):
        template = skeleton.get_output_embeddings()
        new_head = copy.deepcopy(template).to_empty(device=weight.device)
        with torch.no_grad():
            new_head.weight = embedding.weight if head.tied else nn.Parameter(head.embedding.weight.detach().clone())
        if head.bias is not None:
            new_head.bias = head.bias
        model.set_output_embeddings(new_head)
    model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True)
    model.tie_weights()
    return model
