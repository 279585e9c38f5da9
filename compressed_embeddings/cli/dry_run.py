"""`compressed-embeddings compress --dry-run`: the sizes a run would produce, from the model's config alone.

The model is built on the meta device (no weights are read, nothing is written): [`dry_run_sizes`] returns the
embedding's shape and dtype, its bytes, the bytes the method would store and how they divide, the ratio and the
checkpoint's weight bytes ([`DryRunSizes`]); `dry_run_command` prints them.
"""

import argparse
from dataclasses import dataclass

from .common import CommandError, load_config, mib, model_class, tensor_bytes
from .compress import _calibration_keyword, _compression_config


@dataclass
class DryRunSizes:
    """The sizes `compress --dry-run` predicts from a model's config alone ([`dry_run_sizes`]); bytes in `dtype`.

    `stored_bytes` is what the compressed embedding stores (`CompressionReport.stored_bytes`), exactly when `exact`;
    otherwise (transform coding below its ceiling) an upper bound: the byte budget, which the bit allocation, run on
    the weights, fills up to at most. `head_stored_bytes` is the same for an untied output head compressed with codes
    of its own. `checkpoint_weight_bytes` is the weights the output's safetensors hold (the folder adds config.json,
    the code files, the model card and the tokenizer).
    """

    model_class: str
    method: str
    num_embeddings: int
    embedding_dim: int
    code_dim: int
    dtype: str
    dtype_from: str
    tied_output_head: bool
    original_bytes: int
    stored_bytes: int
    exact: bool
    parts: dict[str, int]
    source_weight_bytes: int
    checkpoint_weight_bytes: int
    budget_bytes: float | None = None
    head_stored_bytes: int | None = None

    @property
    def bytes_ratio(self) -> float:
        """`original_bytes / stored_bytes` (a lower bound unless `exact`)."""
        return self.original_bytes / self.stored_bytes


def _resolve_dtype(config, dtype: str):
    """`(torch dtype, where it comes from)`: `dtype`, or for "auto" the config's `dtype` (`torch_dtype` in older
    files) as transformers' `dtype="auto"` reads it, float32 when the config names none."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype), "--dtype"
    value = getattr(config, "dtype", None) or config.to_dict().get("torch_dtype")
    if isinstance(value, str):
        value = getattr(torch, value.removeprefix("torch."), None)
    if isinstance(value, torch.dtype):
        return value, "config.json"
    return torch.float32, "default: config.json names no dtype"


def _meta_model(source: str, revision: str | None, dtype: str):
    """The model of `source` built from its config on the meta device (no weights read), with its dtype's origin."""
    import torch

    from ..configuration import CONFIG_KEY

    config = load_config(source, revision)
    if getattr(config, CONFIG_KEY, None) is not None:
        raise CommandError(
            f"{source} is already compressed (model_type {config.model_type!r}). Pass the original model, or "
            f"`compressed-embeddings decompress {source} --output DIR` first to re-compress."
        )
    torch_dtype, origin = _resolve_dtype(config, dtype)
    cls = model_class(config)
    with torch.device("meta"):
        if hasattr(cls, "_from_config"):
            model = cls._from_config(config, dtype=torch_dtype)
        else:  # AutoModel
            model = cls.from_config(config, dtype=torch_dtype)
    return model, origin


def dry_run_sizes(
    model: str,
    config=None,
    *,
    dtype: str = "auto",
    revision: str | None = None,
    calibration: str = "generic",
) -> DryRunSizes:
    """What `compress` would produce for `model` (a folder or Hub id) with `config` (a `CompressedEmbeddingConfig`,
    default the default one), computed from the model's config alone: the model is built on the meta device, no
    weights are read. `dtype` as `--dtype`; `calibration` as `--calibration-text` ("generic", "none", or anything
    else for text), which decides whether transform coding cuts the rows into tiers.

    Autoencoder and SVD sizes are exact: the layer the resolved config describes, built on the meta device. Transform
    coding allocates its bits on the weights: its stored bytes are exact only when every column can have the most
    bits within the budget, else the budget is an upper bound ([`DryRunSizes`]).
    """
    from dataclasses import replace as replace_fields

    from ..compress import _input_embedding
    from ..configuration import CompressedEmbeddingConfig
    from ..modeling import head_is_tied

    config = config if config is not None else CompressedEmbeddingConfig()
    meta, dtype_from = _meta_model(model, revision, dtype)
    embedding = _input_embedding(meta)  # the same checks as the real run: a lookup table it can replace
    num_embeddings, embedding_dim = embedding.weight.shape
    weight_dtype = embedding.weight.dtype
    tied = head_is_tied(meta)
    head_copy = tied and not config.compress_output_head  # the real run unties the head and keeps its matrix
    spec = config.resolved(
        num_embeddings=num_embeddings,
        embedding_dim=embedding_dim,
        padding_idx=embedding.padding_idx,
        tied_output_head=tied and not head_copy,
    )
    # Rows are cut into tiers when calibration yields token importances: text (generic or yours) does, and so does
    # the data-free calibration of a model that generates; random token ids (no head or no generation) do not.
    tiered = calibration.lower() != "none" or (meta.get_output_embeddings() is not None and meta.can_generate())
    stored, exact, parts, budget = _stored(spec, weight_dtype, tiered)
    head = None if tied else meta.get_output_embeddings() if config.compress_output_head else None
    head_stored = head_original = None
    if getattr(getattr(head, "weight", None), "dim", lambda: 0)() == 2:  # an untied head: codes of its own
        head_spec = (config.output_head or replace_fields(config, output_head=None)).resolved(
            num_embeddings=head.weight.shape[0], embedding_dim=head.weight.shape[1], tied_output_head=True
        )
        head_stored, head_exact, _, _ = _stored(head_spec, head.weight.dtype, tiered)
        head_original, exact = tensor_bytes([head.weight]), exact and head_exact
    original = num_embeddings * embedding_dim * weight_dtype.itemsize
    seen: dict[int, object] = {}  # tied tensors are one object, saved once
    for tensor in meta.state_dict(keep_vars=True).values():
        seen.setdefault(id(tensor), tensor)
    source_bytes = tensor_bytes(seen.values())
    return DryRunSizes(
        model_class=type(meta).__name__,
        method=spec.method,
        num_embeddings=num_embeddings,
        embedding_dim=embedding_dim,
        code_dim=spec.code_dim,
        dtype=str(weight_dtype).removeprefix("torch."),
        dtype_from=dtype_from,
        tied_output_head=tied,
        original_bytes=original,
        stored_bytes=stored,
        exact=exact,
        parts=parts,
        source_weight_bytes=source_bytes,
        checkpoint_weight_bytes=source_bytes
        - original
        + stored
        + (original if head_copy else 0)
        - (head_original or 0)
        + (head_stored or 0),
        budget_bytes=budget,
        head_stored_bytes=head_stored,
    )


def _stored(spec, dtype, tiered: bool) -> tuple[int, bool, dict[str, int], float | None]:
    """`(stored bytes, exact, bytes of each part, byte budget)` of the layer a resolved `spec` describes (transform
    coding: its budget, an upper bound unless every column can have the most bits; `tiered`: rows cut into tiers)."""
    import math
    from dataclasses import replace as replace_fields

    from ..layer import CompressedEmbedding

    rows, cols = spec.num_embeddings, spec.embedding_dim
    if spec.method != "transform_coding":
        layer = CompressedEmbedding.from_config(spec, device="meta", dtype=dtype)
        parts = {
            f"{name} {'x'.join(map(str, t.shape))} {str(t.dtype).removeprefix('torch.')}": tensor_bytes([t])
            for name, t in layer.state_dict().items()
        }
        return layer.stored_bytes(), True, parts, None
    from ..methods.transform_coding import byte_budget, tier_sizes_for

    sizes = tier_sizes_for(rows, spec.first_tier_rows) if tiered else [rows]
    budget, _, most = byte_budget(rows, cols, dtype, spec, sizes)
    exact = most <= budget
    stored = most if exact else math.floor(budget)
    layout = replace_fields(spec, code_bits=[[0] * cols] * len(sizes), tier_sizes=sizes)
    state = CompressedEmbedding.from_config(layout, device="meta", dtype=dtype).state_dict()
    decoder = tensor_bytes(t for name, t in state.items() if name.startswith("decoder."))
    tiers = tensor_bytes(t for name, t in state.items() if name.endswith("row_tiers"))
    parts = {"decoder (int8 weight, scales, bias)" if spec.decoder_dtype == "int8" else "decoder": decoder}
    parts["row tiers (1 byte a row)"] = tiers
    parts[f"bit planes + codebooks ({len(sizes)} tier(s))"] = stored - decoder - tiers
    return stored, exact, parts, budget


def dry_run_command(args: argparse.Namespace) -> int:
    config = _compression_config(args)
    sizes = dry_run_sizes(
        args.model, config, dtype=args.dtype, revision=args.revision, calibration=_calibration_keyword(args) or "text"
    )
    bound = "" if sizes.exact else "at most "
    head = "tied to it" if sizes.tied_output_head else "not tied to it"
    if sizes.tied_output_head and not config.compress_output_head:
        head += " (--input-only: untied, its matrix kept)"
    elif sizes.head_stored_bytes is not None:
        head += f"; compressed with codes of its own: {bound}{sizes.head_stored_bytes:,} bytes"
    print(
        f"Dry run: {sizes.model_class} built from the config of {args.model} on the meta device (no weights read); "
        f"nothing written to {args.output}."
    )
    print(
        f"Embedding: {sizes.num_embeddings} x {sizes.embedding_dim} in {sizes.dtype} ({sizes.dtype_from}); output "
        f"head {head}."
    )
    print(f"Original embedding: {sizes.original_bytes:,} bytes ({mib(sizes.original_bytes)})")
    parts = ", ".join(f"{name} {size:,}" for name, size in sizes.parts.items())
    print(
        f"Stored by {sizes.method} (code width {sizes.code_dim}): {bound}{sizes.stored_bytes:,} bytes "
        f"({mib(sizes.stored_bytes)}) = {parts}"
    )
    print(f"Ratio: {'at least ' if bound else ''}{sizes.bytes_ratio:.2f}x in {sizes.dtype}")
    print(
        f"Checkpoint weights: {sizes.source_weight_bytes:,} -> {bound}{sizes.checkpoint_weight_bytes:,} bytes "
        f"({mib(sizes.source_weight_bytes)} -> {mib(sizes.checkpoint_weight_bytes)}); the folder adds config.json, "
        "the code files, the model card and the tokenizer"
    )
    if not sizes.exact:
        print(
            f"note: {sizes.method} allocates its bits on the weights; the run stores at most the budget "
            f"({sizes.budget_bytes:,.1f} bytes = the embedding's bytes / {config.compression_ratio:g}), usually a "
            "little less (what no further bit fits in)."
        )
    return 0
