"""The model card of a compressed model (`README.md`, written by `save_pretrained` and uploaded by `push_to_hub`).

`compressed_embeddings.hub.install()` (run when the package is imported) installs `write_model_card` on every
compressed model class (`CompressedModelMixin`), so that `save_pretrained(folder)` writes `README.md` with YAML
metadata (`base_model` when known, `base_model_relation: quantized`, the base model's `license` when a local
README.md or the config states one, `library_name: transformers`, tags including `compressed-embeddings`,
`pipeline_tag`) and a body stating the method (its text is the method's `MethodText`, read through `_method_text`),
its size in the method's own terms (code size k and parameters, or bits per code entry and bytes), the bytes saved,
the calibration data, the quality figures measured when the model was compressed and those given as `evaluation`
(only those) and the two ways to load it.

A card written by this module carries `CARD_MARKER`; a `README.md` without it (written or edited by a person) is
kept, and only its metadata is completed. Checkpoints loaded with `trust_remote_code=True` alone (without this
package) save like any transformers model, without a card.

Example:

```python
>>> from compressed_embeddings.cards import model_card
>>> print(model_card(model, repo_id="me/smollm2-ae10").data.to_yaml())  # doctest: +SKIP
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
library_name: transformers
...
```
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import ModelCard, ModelCardData, try_to_load_from_cache
from transformers.utils import logging

from .configuration import CONFIG_KEY, METHOD_CONFIGS, CompressedEmbeddingConfig
from .layer import CompressedEmbedding, CompressedOutputHead
from .modeling import CODE_FILES, CompressedModelMixin, family_classes

logger = logging.get_logger(__name__)

__all__ = [
    "CARD_MARKER",
    "TAGS",
    "MethodText",
    "PAPER",
    "PAPER_BIBTEX",
    "no_history",
    "parameter_rows",
    "compression_summary",
    "model_card",
    "write_model_card",
]

#: Tags every compressed model's card carries.
TAGS = ("compressed-embeddings", "embedding-compression")
#: First line of a card body written by this module; cards without it are treated as hand-written and kept.
CARD_MARKER = "<!-- compressed_embeddings model card: regenerated on save and push; delete this line to keep edits -->"
_PIPELINE_TAGS = {
    "AutoModelForCausalLM": "text-generation",
    "AutoModelForMaskedLM": "fill-mask",
    "AutoModelForSequenceClassification": "text-classification",
    "AutoModelForTokenClassification": "token-classification",
    "AutoModelForQuestionAnswering": "question-answering",
    "AutoModel": "feature-extraction",
}
#: The paper this library implements: its address and its BibTeX (cards of the methods it describes cite it).
PAPER = "https://aclanthology.org/2021.repl4nlp-1.5/"
PAPER_BIBTEX = """@inproceedings{balazy2021direction,
  title = {Direction is what you need: Improving Word Embedding Compression in Large Language Models},
  author = {Ba{\\l}azy, Klaudia and Banaei, Mohammadreza and Lebret, R{\\'e}mi and Tabor, Jacek and Aberer, Karl},
  booktitle = {Proceedings of the 6th Workshop on Representation Learning for NLP (RepL4NLP-2021)},
  year = {2021},
  url = {https://aclanthology.org/2021.repl4nlp-1.5/}
}"""


@dataclass(frozen=True)
class MethodText:
    """What a model card says about one compression method (the single place its card text lives).

    Args:
        name: how the method is named in the card's table.
        description: one paragraph on the method; formatted with the figures of `_figures` (`{vocab}`, `{hidden}`,
            `{code_dim}`, `{mean_bits}`, ...).
        ratio_unit: what its `compression_ratio` counts, `"parameters"` or `"bytes"`.
        size_rows: the method's rows of the "Compression" table, from the figures and the config.
        history_rows: the rows describing `CompressionReport.loss_history`, from the history and the config.
        data_free: the sentence stating a compression without calibration data (`None`: the method takes none).
        citation: BibTeX to cite, if any.
    """

    name: str
    description: str
    ratio_unit: str
    size_rows: Callable[[dict, CompressedEmbeddingConfig], list[tuple[str, str]]]
    history_rows: Callable[[list[float], CompressedEmbeddingConfig], list[tuple[str, str]]]
    data_free: str | None = None
    citation: str | None = None


def parameter_rows(size: dict, spec: CompressedEmbeddingConfig) -> list[tuple[str, str]]:
    """The "Compression" rows of a method sized in parameters (code size k, parameters, ratio)."""
    return [
        ("code size k", f"{size['code_dim']}"),
        (
            "embedding parameters",
            f"{size['vocab'] * size['hidden']:,} -> {size['stored_parameters']:,} (codes + decoder, "
            f"{size['decoder_parameters']:,} in the decoder)",
        ),
        ("compression ratio", f"{size['ratio']:.2f}x (parameters)"),
    ]


def no_history(history: list[float], spec: CompressedEmbeddingConfig) -> list[tuple[str, str]]:
    """No rows: the method's loss history says nothing worth a card line."""
    return []


def _method_text(method: str) -> MethodText:
    """What the card says about `method`: the `card` of its registered settings class (`MethodConfig.card`), the one
    place a method's card text lives; a generic text for a method this process does not know."""
    card = getattr(METHOD_CONFIGS.get(method), "card", None)
    return card or MethodText(
        name=method,
        description=f"Method `{method}` (unknown to this version of compressed_embeddings).",
        ratio_unit="parameters",
        size_rows=parameter_rows,
        history_rows=no_history,
    )


def __getattr__(name: str):
    if name == "METHOD_TEXTS":  # each registered method's card text, by method name
        return {method: _method_text(method) for method in METHOD_CONFIGS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _auto_class_name(model) -> str:
    """The Auto class that loads `model`'s own head, e.g. `AutoModelForCausalLM` for a `...ForCausalLM`."""
    base_class = type(model).base_model_class
    family = base_class.config_class.model_type
    for auto_name, class_name in family_classes(family).items():
        if auto_name != "AutoModel" and class_name == base_class.__name__:
            return auto_name
    return "AutoModel"


def _spec(model) -> CompressedEmbeddingConfig:
    block = getattr(model.config, CONFIG_KEY)
    return block if isinstance(block, CompressedEmbeddingConfig) else CompressedEmbeddingConfig.from_dict(block)


_LICENSE_FIELDS = ("license", "license_name", "license_link")


def _source_license(model) -> dict[str, str]:
    """The base model's license fields (`license`, and `license_name` / `license_link` for `other`), from local
    files only: the config, the README.md of the folder the model was loaded from, or the base model's README.md
    if it is in the Hub cache. Empty when none of them states a license."""
    license_ = getattr(model.config, "license", None)
    if isinstance(license_, str) and license_:
        return {"license": license_}
    readmes = []
    source = str(getattr(model.config, "_name_or_path", "") or "")
    if source and os.path.isdir(source):
        readmes.append(Path(source) / "README.md")
    base_model = _spec(model).base_model
    if base_model:
        try:
            cached = try_to_load_from_cache(base_model, "README.md")
        except Exception:  # an invalid id or an unreadable cache: no license from there
            cached = None
        if isinstance(cached, str):
            readmes.append(Path(cached))
    for readme in readmes:
        if not readme.is_file():
            continue
        try:  # a file path: ModelCard.load reads it without any network access
            data = ModelCard.load(readme, ignore_metadata_errors=True).data
        except Exception as error:
            logger.info(f"Could not read a license from {readme}: {error}")
            continue
        found = {name: getattr(data, name, None) for name in _LICENSE_FIELDS}
        found = {name: value for name, value in found.items() if isinstance(value, str) and value}
        if "license" in found:
            return found
    return {}


def _card_data(model, tags=()) -> ModelCardData:
    spec = _spec(model)
    all_tags = [*TAGS, spec.method]
    for tag in [*(getattr(model, "model_tags", None) or []), *tags]:
        if tag not in all_tags:
            all_tags.append(tag)
    data = ModelCardData(
        library_name="transformers",
        tags=all_tags,
        pipeline_tag=_PIPELINE_TAGS.get(_auto_class_name(model)),
        base_model_relation="quantized",  # the Hub's relation for a compressed derivative of the base model
        **_source_license(model),
    )
    if spec.base_model:
        data.base_model = spec.base_model
    return data


def _figures(model) -> dict:
    """What the card states about size, computed from the model itself (so it holds after a reload): the same
    counts as `CompressionReport` (bytes of the layer's stored tensors against the embedding in the model's dtype)."""
    layer = model.get_input_embeddings()
    if not isinstance(layer, CompressedEmbedding):
        raise TypeError(f"{type(model).__name__} has no CompressedEmbedding; it is not a compressed model.")
    spec = _spec(model)
    vocab, hidden, code_dim = layer.num_embeddings, layer.embedding_dim, layer.code_dim
    stored_parameters = layer.stored_parameters()
    stored_bytes = layer.stored_bytes()
    dtype = getattr(model, "dtype", None) or layer.compute_dtype
    original_bytes = vocab * hidden * dtype.itemsize
    runtime = layer.packed_runtime()
    packed = getattr(layer, "packed", None) if layer.codes is None else None
    return {
        "vocab": vocab,
        "hidden": hidden,
        "code_dim": code_dim,
        "decoder_parameters": sum(p.numel() for p in layer.decoder.parameters()),
        "stored_parameters": stored_parameters,
        "ratio": vocab * hidden / stored_parameters,
        "dtype": str(dtype).replace("torch.", ""),
        "original_bytes": original_bytes,
        "stored_bytes": stored_bytes,
        "saved_bytes": original_bytes - stored_bytes,
        "bytes_ratio": layer.compression_ratio(dtype),
        "fp32_ratio": layer.compression_ratio(torch.float32),
        "runtime_bytes": None if runtime is None else runtime.nbytes(),
        "tied": isinstance(head := model.get_output_embeddings(), CompressedOutputHead) and head.tied,
        "own_head": _own_head_figures(head, dtype),
        "code_bits": None if packed is None else packed.bits,
        "tier_sizes": None if packed is None else packed.tier_sizes,
        "mean_bits": None if packed is None else packed.mean_bits,
        "codes_storage": (
            "packed integers"
            if packed is not None
            else "int8, one scale per row"
            if spec.codes_dtype == "int8"
            else str(layer.codes.dtype).replace("torch.", "")
        ),
        "int8_decoder": spec.decoder_dtype == "int8",
    }


def _own_head_figures(head, dtype) -> dict | None:
    """Bytes of an untied output head compressed with codes of its own (None for any other head)."""
    if not isinstance(head, CompressedOutputHead) or head.tied:
        return None
    layer = head.embedding
    original = layer.num_embeddings * layer.embedding_dim * dtype.itemsize
    return {"original_bytes": original, "stored_bytes": layer.stored_bytes(), "ratio": layer.compression_ratio(dtype)}


def _runtime_line(size: dict) -> str:
    """The card's line on the memory packed codes hold while the model runs (their runtime layout), if any."""
    if size["runtime_bytes"] is None:
        return ""
    per_row = (size["stored_bytes"] + size["runtime_bytes"]) / size["vocab"]
    return (
        f"| embedding bytes while running | {size['stored_bytes'] + size['runtime_bytes']:,} ({per_row:.0f} per row: "
        "the stored codes and their runtime layout, int8 / int4 matrices the tied head multiplies) |\n"
    )


def _table(rows: list[tuple[str, str]]) -> str:
    return "\n".join(f"| {name} | {value} |" for name, value in rows)


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:#.4g}"


def _evaluation_section(evaluation: Mapping | None) -> str:
    """A table of the task-level figures given to `model_card(evaluation=...)`: `{metric: {data: {column: value}}}`
    (columns such as `"original"` and `"compressed"`; a bare value is the compressed model's)."""
    if not evaluation:
        return "Task-level quality (perplexity, accuracy) was not measured for this card."
    if not isinstance(evaluation, Mapping):
        raise TypeError(f"evaluation must be a dict {{metric: {{data: {{column: value}}}}}}, got {evaluation!r}.")
    rows, columns = [], []
    for metric, per_data in evaluation.items():
        if not isinstance(per_data, Mapping):
            raise TypeError(f"evaluation[{metric!r}] must map data names to results, got {per_data!r}.")
        for data_name, values in per_data.items():
            values = dict(values) if isinstance(values, Mapping) else {"compressed": values}
            columns += [column for column in values if column not in columns]
            rows.append((metric, data_name, values))
    ratio = "original" in columns and "compressed" in columns
    header = ["metric", "data", *columns, *(["compressed / original"] if ratio else [])]
    lines = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"]
    for metric, data_name, values in rows:
        cells = [str(metric), str(data_name), *(_number(values[c]) if c in values else "" for c in columns)]
        if ratio:
            original, compressed = values.get("original"), values.get("compressed")
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (original, compressed))
            cells.append(f"{compressed / original:#.4g}x" if numbers and original and math.isfinite(original) else "")
        lines.append(f"| {' | '.join(cells)} |")
    return "Task-level quality, as measured and given to this card:\n\n" + "\n".join(lines)


def _quality_section(model, method: MethodText, spec: CompressedEmbeddingConfig, evaluation: Mapping | None) -> str:
    report = getattr(model, "compression_report", None)
    if report is None:
        fidelity = (
            f"No {'embedding fidelity' if evaluation else 'quality'} figures are recorded with this model: they are "
            "measured when a model is compressed (`compress_model`, `compressed-embeddings compress`), and this card "
            "was written for a model loaded from a checkpoint. See the card of the compressed checkpoint it came from."
        )
    else:
        rows = [
            ("mean cosine similarity, decoded vs original rows", f"{report.mean_cosine:.4f}"),
            ("minimum cosine similarity over rows", f"{report.min_cosine:.4f}"),
            ("relative Frobenius error", f"{report.relative_frobenius_error:.4f}"),
            ("norm ratio (decoded / original)", f"{report.norm_ratio:.4f}"),
            ("compression time", f"{report.wall_time_s:.1f} s"),
            *method.history_rows(list(report.loss_history or []), spec),
        ]
        fidelity = (
            f"Measured on all {report.num_embeddings:,} rows of the embedding matrix when it was compressed "
            f"(`model.compression_report`):\n\n| figure | value |\n|---|---|\n{_table(rows)}"
        )
    return f"{fidelity}\n\n{_evaluation_section(evaluation)}"


def _calibration_line(model, method: MethodText, spec: CompressedEmbeddingConfig) -> str:
    """The line naming the data the calibration statistics were measured on; empty for a method that takes none."""
    described = getattr(spec, "calibration_data", None)
    if described:
        return f"Calibration: {described}."
    if method.data_free is None:
        return ""
    block = getattr(model.config, CONFIG_KEY, None)
    if isinstance(block, Mapping) and "calibration_data" not in block:  # written before it was recorded
        return "Calibration: not recorded in this checkpoint."
    return f"Calibration: {method.data_free}."


def model_card(model, repo_id: str | None = None, tags=(), evaluation: Mapping | None = None) -> ModelCard:
    """The model card of a compressed model: YAML metadata and a body with the method, size and quality figures.

    Args:
        model: a compressed model (`compress_model` output or a loaded compressed checkpoint).
        repo_id: the Hub id shown in the loading examples (a placeholder when None).
        tags: extra tags (the model's `model_tags` are always included).
        evaluation: task-level figures to state, as measured by the caller, e.g.
            `{"perplexity": {"brown test": {"original": 57.1, "compressed": 59.0}}}`; none are stated without it.

    Example:

    ```python
    >>> card = model_card(model, repo_id="me/tiny-ae")  # doctest: +SKIP
    >>> card.data.library_name, card.data.base_model_relation  # doctest: +SKIP
    ('transformers', 'quantized')
    ```
    """
    if not isinstance(model, CompressedModelMixin):
        raise TypeError(f"{type(model).__name__} is not a compressed model (see `compress_model`).")
    spec, size, data = _spec(model), _figures(model), _card_data(model, tags)
    method = _method_text(spec.method)
    auto_name = _auto_class_name(model)
    name = repo_id or "PATH_OR_REPO_ID"
    source = f"[`{spec.base_model}`](https://huggingface.co/{spec.base_model})" if spec.base_model else None
    title = repo_id.split("/")[-1] if repo_id else f"Compressed {type(model).base_model_class.__name__}"
    codes = "frozen (the decoder trains)" if spec.freeze_codes else "trainable"
    weight = "int8 weight, one scale per code column" if size["int8_decoder"] else f"{size['dtype']} weight"
    decoder = (
        f"a linear decoder ({weight})"
        if not spec.decoder_hidden_dims
        else f"an MLP decoder (hidden widths {spec.decoder_hidden_dims}, {spec.decoder_activation})"
    )
    if size["mean_bits"] is not None:
        bits, shape = f"{size['mean_bits']:.2f} bits", f"{size['vocab']:,} x {size['code_dim']}"
        codes_shape = f"packed integer codes of {bits} per entry on average ({shape}) indexing per-column codebooks"
    else:
        codes_shape = f"per-token codes ({size['vocab']:,} x {size['code_dim']})"
    own = size["own_head"]
    head = (
        "The output head is tied to the compressed embedding (logits use the decoded matrix)."
        if size["tied"]
        else f"The untied output head is compressed too, with codes of its own: {own['original_bytes']:,} -> "
        f"{own['stored_bytes']:,} bytes in {size['dtype']} ({own['ratio']:.2f}x)."
        if own
        else "The output head, if any, is stored as in the original model."
    )
    rows = [
        ("method", method.name),
        *method.size_rows(size, spec),
        (
            "embedding bytes",
            f"{size['original_bytes']:,} -> {size['stored_bytes']:,} in {size['dtype']}, the model's dtype "
            f"({size['bytes_ratio']:.2f}x, {size['saved_bytes']:,} bytes saved; {size['fp32_ratio']:.2f}x against "
            "the matrix in fp32)",
        ),
        ("storage", f"codes: {size['codes_storage']}; decoder: {decoder.removeprefix('a ').removeprefix('an ')}"),
    ]
    calibration = _calibration_line(model, method, spec)
    citation = f"\n## Citation\n\n```bibtex\n{method.citation}\n```\n" if method.citation else ""
    body = f"""{CARD_MARKER}

# {title}

{source or f"A `{type(model).base_model_class.__name__}` model"} whose token embedding is compressed with
[compressed_embeddings](https://pypi.org/project/compressed-embeddings/): the {size["vocab"]:,} x {size["hidden"]}
embedding matrix is replaced by {codes_shape} and {decoder}
({size["code_dim"]} -> {size["hidden"]}). {head} Everything else is the original architecture.

## Compression

{method.description.format(**size)}

| | |
|---|---|
{_table(rows)}
{_runtime_line(size)}| codes during fine-tuning | {codes} |
{f"{chr(10)}{calibration}{chr(10)}" if calibration else ""}
## Quality

{_quality_section(model, method, spec, evaluation)}

## How to load

With the package installed (`pip install compressed-embeddings`), importing it registers the compressed
model types with the Auto classes:

```python
import compressed_embeddings  # noqa: F401
from transformers import {auto_name}

model = {auto_name}.from_pretrained("{name}")
```

With transformers alone: the repository carries the model code ({", ".join(f"`{file}`" for file in CODE_FILES)};
they import only torch, transformers and safetensors). Read them, then:

```python
from transformers import {auto_name}

model = {auto_name}.from_pretrained("{name}", trust_remote_code=True)
```

Fine-tuning works with the stock `Trainer` and example scripts (`--trust_remote_code True`).
{citation}"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _merge_metadata(card: ModelCard, model, tags=()) -> ModelCard:
    """Complete a hand-written card's metadata (library, base model and relation, license, tags) without touching
    its text or any field it sets."""
    ours = _card_data(model, tags)
    card.data.library_name = card.data.library_name or ours.library_name
    for name in ("base_model", "base_model_relation", *_LICENSE_FIELDS):
        if getattr(ours, name, None) and not getattr(card.data, name, None):
            setattr(card.data, name, getattr(ours, name))
    card.data.tags = list(card.data.tags or [])
    card.data.tags += [tag for tag in ours.tags if tag not in card.data.tags]
    return card


def write_model_card(
    model, save_directory, repo_id: str | None = None, tags=(), *, evaluation: Mapping | None = None
) -> Path:
    """Write (or complete) `README.md` in `save_directory`. Installed as `CompressedModelMixin.write_model_card`,
    which `save_pretrained` calls; a README.md without `CARD_MARKER` only gets its metadata completed.
    `evaluation`: task-level figures for the card (see `model_card`)."""
    path = Path(save_directory) / "README.md"
    if path.is_file() and CARD_MARKER not in path.read_text(encoding="utf-8"):
        card = _merge_metadata(ModelCard.load(path), model, tags)
        logger.info(f"{path} was not written by compressed_embeddings: kept it, completed its metadata only.")
    else:
        card = model_card(model, repo_id=repo_id, tags=tags, evaluation=evaluation)
    card.save(path)
    return path


def compression_summary(model) -> str:
    """The method and size of a compressed model in a few words, e.g. `transform_coding (4.07x in bytes)` or
    `autoencoder (k=64)` (the commit message of `push_folder`)."""
    spec = _spec(model)
    if _method_text(spec.method).ratio_unit == "bytes":
        return f"{spec.method} ({_figures(model)['bytes_ratio']:.2f}x in bytes)"
    return f"{spec.method} (k={spec.code_dim})"
