"""Model cards and `push_to_hub` for compressed models.

Importing the package calls `install()`, which gives every compressed model class (`CompressedModelMixin`):

- a model card: `save_pretrained(folder)` writes `README.md` with YAML metadata (`base_model` when known,
  `library_name: transformers`, tags including `compressed-embeddings`, `pipeline_tag`) and a body stating the
  method, the code size, the ratio, the bytes saved, the quality figures measured when the model was compressed
  (only those) and the two ways to load it;
- a `push_to_hub` that uploads that card: transformers' own method saves into a temporary folder, then replaces
  `README.md` by a generic card (or by the repo's current one) before committing.

A card written by this module carries `CARD_MARKER`; a `README.md` without it (written or edited by a person,
in the folder or in the Hub repo) is kept, and only its metadata is completed. Checkpoints loaded with
`trust_remote_code=True` alone (without this package) save and push like any transformers model, without a card.

Example:

```python
>>> from compressed_embeddings.hub import model_card
>>> print(model_card(model, repo_id="me/smollm2-ae10").data.to_yaml())  # doctest: +SKIP
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
library_name: transformers
...
```
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.errors import EntryNotFoundError, HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers.utils import logging

from .configuration import CONFIG_KEY, CompressedEmbeddingConfig
from .layer import CompressedEmbedding, CompressedOutputHead
from .modeling import CODE_FILES, CompressedModelMixin, family_classes

logger = logging.get_logger(__name__)

__all__ = [
    "CARD_MARKER",
    "TAGS",
    "hub_model_id",
    "install",
    "model_card",
    "push_folder",
    "push_to_hub",
    "write_model_card",
]

#: Tags every compressed model's card carries.
TAGS = ("compressed-embeddings", "embedding-compression")
#: First line of a card body written by this module; cards without it are treated as hand-written and kept.
CARD_MARKER = "<!-- compressed_embeddings model card: regenerated on save and push; delete this line to keep edits -->"
PAPER = "https://aclanthology.org/2021.repl4nlp-1.5/"
_PIPELINE_TAGS = {
    "AutoModelForCausalLM": "text-generation",
    "AutoModelForMaskedLM": "fill-mask",
    "AutoModelForSequenceClassification": "text-classification",
    "AutoModelForTokenClassification": "token-classification",
    "AutoModelForQuestionAnswering": "question-answering",
    "AutoModel": "feature-extraction",
}
_METHODS = {
    "autoencoder": f'the direction-aware autoencoder of ["Direction is what you need"]({PAPER}) (Bałazy et al., 2021)',
    "svd": "truncated SVD (codes `U_k S_k`, decoder `V_k^T`), the baseline",
}


def hub_model_id(name_or_path) -> str | None:
    """`name_or_path` if it is a Hub model id (`"user/name"` or `"name"`), None for a local path or nothing.

    Example:

    ```python
    >>> hub_model_id("HuggingFaceTB/SmolLM2-135M"), hub_model_id("/tmp/model"), hub_model_id("")
    ('HuggingFaceTB/SmolLM2-135M', None, None)
    ```
    """
    text = str(name_or_path or "")
    if not text or text.startswith(("/", ".", "~")) or "\\" in text or os.path.exists(os.path.expanduser(text)):
        return None
    try:
        validate_repo_id(text)
    except HFValidationError:
        return None
    return text


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
    )
    if spec.base_model:
        data.base_model = spec.base_model
    return data


def _figures(model) -> dict:
    """What the card states about size, computed from the model itself (so it holds after a reload)."""
    layer = model.get_input_embeddings()
    if not isinstance(layer, CompressedEmbedding):
        raise TypeError(f"{type(model).__name__} has no CompressedEmbedding; it is not a compressed model.")
    vocab, hidden, code_dim = layer.num_embeddings, layer.embedding_dim, layer.code_dim
    stored_parameters = sum(p.numel() for p in layer.parameters())
    stored_bytes = sum(t.numel() * t.element_size() for t in layer.state_dict().values())
    dtype = layer.compute_dtype
    original_bytes = vocab * hidden * dtype.itemsize
    runtime = layer.packed_runtime()
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
        "fp32_ratio": vocab * hidden * 4 / stored_bytes,
        "runtime_bytes": None if runtime is None else runtime.nbytes(),
        "tied": isinstance(model.get_output_embeddings(), CompressedOutputHead),
    }


def _runtime_line(size: dict) -> str:
    """The card's line on the memory packed codes hold while the model runs (their runtime layout), if any."""
    if size["runtime_bytes"] is None:
        return ""
    per_row = (size["stored_bytes"] + size["runtime_bytes"]) / size["vocab"]
    return (
        f"| embedding bytes while running | {size['stored_bytes'] + size['runtime_bytes']:,} ({per_row:.0f} per row: "
        "the stored codes and their runtime layout, int8 / int4 matrices the tied head multiplies) |\n"
    )


def _quality_section(model) -> str:
    report = getattr(model, "compression_report", None)
    if report is None:
        return (
            "No quality figures are recorded with this model: they are measured when a model is compressed "
            "(`compress_model`, `compressed-embeddings compress`), and this card was written for a model loaded "
            "from a checkpoint. See the card of the compressed checkpoint it came from."
        )
    rows = [
        ("mean cosine similarity, decoded vs original rows", f"{report.mean_cosine:.4f}"),
        ("minimum cosine similarity over rows", f"{report.min_cosine:.4f}"),
        ("relative Frobenius error", f"{report.relative_frobenius_error:.4f}"),
        ("norm ratio (decoded / original)", f"{report.norm_ratio:.4f}"),
        ("compression time", f"{report.wall_time_s:.1f} s"),
    ]
    if report.loss_history:
        rows.append(("final training loss (autoencoder objective)", f"{report.loss_history[-1]:.5g}"))
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (
        f"Measured on all {report.num_embeddings:,} rows of the embedding matrix when it was compressed "
        f"(`model.compression_report`):\n\n| figure | value |\n|---|---|\n{table}\n\n"
        "Task-level quality (perplexity, accuracy) was not measured for this card."
    )


def model_card(model, repo_id: str | None = None, tags=()) -> ModelCard:
    """The model card of a compressed model: YAML metadata and a body with the method, size and quality figures.

    Args:
        model: a compressed model (`compress_model` output or a loaded compressed checkpoint).
        repo_id: the Hub id shown in the loading examples (a placeholder when None).
        tags: extra tags (the model's `model_tags` are always included).

    Example:

    ```python
    >>> card = model_card(model, repo_id="me/tiny-ae")  # doctest: +SKIP
    >>> card.data.library_name, "compressed-embeddings" in card.data.tags  # doctest: +SKIP
    ('transformers', True)
    ```
    """
    if not isinstance(model, CompressedModelMixin):
        raise TypeError(f"{type(model).__name__} is not a compressed model (see `compress_model`).")
    spec, size, data = _spec(model), _figures(model), _card_data(model, tags)
    auto_name = _auto_class_name(model)
    name = repo_id or "PATH_OR_REPO_ID"
    source = f"[`{spec.base_model}`](https://huggingface.co/{spec.base_model})" if spec.base_model else None
    title = repo_id.split("/")[-1] if repo_id else f"Compressed {type(model).base_model_class.__name__}"
    codes = "frozen (the decoder trains)" if spec.freeze_codes else "trainable"
    decoder = (
        "a linear decoder"
        if not spec.decoder_hidden_dims
        else f"an MLP decoder (hidden widths {spec.decoder_hidden_dims}, {spec.decoder_activation})"
    )
    head = (
        "The output head is tied to the compressed embedding (logits use the decoded matrix)."
        if size["tied"]
        else "The output head, if any, is stored as in the original model."
    )
    body = f"""{CARD_MARKER}

# {title}

{source or f"A `{type(model).base_model_class.__name__}` model"} whose token embedding is compressed with
[compressed_embeddings](https://pypi.org/project/compressed-embeddings/): the {size["vocab"]:,} x {size["hidden"]}
embedding matrix is replaced by per-token codes ({size["vocab"]:,} x {size["code_dim"]}) and {decoder}
({size["code_dim"]} -> {size["hidden"]}). {head} Everything else is the original architecture.

## Compression

| | |
|---|---|
| method | {_METHODS.get(spec.method, spec.method)} |
| code size k | {size["code_dim"]} |
| embedding parameters | {size["vocab"] * size["hidden"]:,} -> {size["stored_parameters"]:,} (codes + decoder, \
{size["decoder_parameters"]:,} in the decoder) |
| compression ratio | {size["ratio"]:.2f}x (parameters) |
| embedding bytes | {size["original_bytes"]:,} -> {size["stored_bytes"]:,} in {size["dtype"]}, the model's dtype \
({size["original_bytes"] / size["stored_bytes"]:.2f}x, {size["saved_bytes"]:,} bytes saved; \
{size["fp32_ratio"]:.2f}x against the matrix in fp32) |
{_runtime_line(size)}| codes during fine-tuning | {codes} |

## Quality

{_quality_section(model)}

## How to load

With the package installed (`pip install compressed-embeddings`), importing it registers the compressed
model types with the Auto classes:

```python
import compressed_embeddings  # noqa: F401
from transformers import {auto_name}

model = {auto_name}.from_pretrained("{name}")
```

With transformers alone: the repository carries the model code ({", ".join(f"`{name}`" for name in CODE_FILES)};
they import only torch, transformers and safetensors). Read them, then:

```python
from transformers import {auto_name}

model = {auto_name}.from_pretrained("{name}", trust_remote_code=True)
```

Fine-tuning works with the stock `Trainer` and example scripts (`--trust_remote_code True`).
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _merge_metadata(card: ModelCard, model, tags=()) -> ModelCard:
    """Complete a hand-written card's metadata (library, base model, tags) without touching its text."""
    ours = _card_data(model, tags)
    card.data.library_name = card.data.library_name or ours.library_name
    if ours.base_model and not getattr(card.data, "base_model", None):
        card.data.base_model = ours.base_model
    card.data.tags = list(card.data.tags or [])
    card.data.tags += [tag for tag in ours.tags if tag not in card.data.tags]
    return card


def write_model_card(model, save_directory, repo_id: str | None = None, tags=()) -> Path:
    """Write (or complete) `README.md` in `save_directory`. Installed as `CompressedModelMixin.write_model_card`,
    which `save_pretrained` calls; a README.md without `CARD_MARKER` only gets its metadata completed."""
    path = Path(save_directory) / "README.md"
    if path.is_file() and CARD_MARKER not in path.read_text(encoding="utf-8"):
        card = _merge_metadata(ModelCard.load(path), model, tags)
        logger.info(f"{path} was not written by compressed_embeddings: kept it, completed its metadata only.")
    else:
        card = model_card(model, repo_id=repo_id, tags=tags)
    card.save(path)
    return path


def _card_for_push(model, folder: Path, repo_id: str, token=None, tags=()) -> None:
    try:
        remote = ModelCard.load(repo_id, token=token)
    except EntryNotFoundError:
        remote = None
    if remote is not None and CARD_MARKER not in remote.content:
        _merge_metadata(remote, model, tags).save(folder / "README.md")
        logger.info(f"Kept the hand-written model card of {repo_id}; completed its metadata.")
    else:
        (folder / "README.md").unlink(missing_ok=True)
        write_model_card(model, folder, repo_id=repo_id, tags=tags)


def push_to_hub(
    self,
    repo_id: str,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: bool | str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str | None = "50GB",
    tags: list[str] | None = None,
):
    """Upload the model (weights, config with `auto_map`, code files) and its model card to the Hub.

    The arguments and the result (a `CommitInfo`) are those of transformers' `push_to_hub`. The card is the one
    `model_card` writes, unless the repo already has a hand-written one (without `CARD_MARKER`), which is kept
    with its metadata completed. Push the tokenizer as usual: `tokenizer.push_to_hub(repo_id)`.

    Example:

    ```python
    >>> model.push_to_hub("me/smollm2-ae10")  # doctest: +SKIP
    ```
    """
    from transformers.utils.hub import hf_api

    tags = [tags] if isinstance(tags, str) else list(tags or [])
    repo_id = hf_api().create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        self.save_pretrained(tmp, max_shard_size=max_shard_size)
        _card_for_push(self, Path(tmp), repo_id, token=token, tags=tags)
        return self._upload_modified_files(
            tmp,
            repo_id,
            files_timestamps={},
            commit_message=commit_message,
            token=token,
            create_pr=create_pr,
            revision=revision,
            commit_description=commit_description,
        )


def push_folder(model, folder, repo_id: str, *, token: bool | str | None = None, commit_message: str | None = None):
    """Upload a saved checkpoint folder (weights, code files, tokenizer, report, ...) of `model` to `repo_id`.

    The folder's README.md is first (re)written for `repo_id` as `push_to_hub` does (a hand-written card already in
    the repo is kept). Used by `compressed-embeddings compress --push-to-hub`. Returns the `CommitInfo`.
    """
    from transformers.utils.hub import hf_api

    api = hf_api()
    repo_id = api.create_repo(repo_id, token=token, exist_ok=True).repo_id
    _card_for_push(model, Path(folder), repo_id, token=token)
    spec = _spec(model)
    message = commit_message or f"Upload {type(model).__name__} compressed with {spec.method} (k={spec.code_dim})"
    return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message, token=token)


def install() -> None:
    """Give `CompressedModelMixin` (this package's compressed classes) the model card and `push_to_hub`."""
    CompressedModelMixin.write_model_card = write_model_card
    CompressedModelMixin.push_to_hub = push_to_hub
