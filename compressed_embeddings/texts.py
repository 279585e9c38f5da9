"""Documents and tokens: loading texts from files or the Hub, and counting tokens.

[`load_texts`] reads the documents the command line and the evaluation helpers work on (a `.txt` file, a folder of
them, JSON / JSON lines records or a Hub dataset); [`token_frequencies`] counts how often each token id occurs in
them (the weights of the frequency-weighted fidelity and of calibration). [`as_text_list`] and
[`DOCUMENT_SEPARATOR`] are the conventions every consumer of texts in the package shares.
"""

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ._utils import check_positive_int
from .modeling import looks_like_local_path

__all__ = [
    "DOCUMENT_SEPARATOR",
    "as_text_list",
    "load_texts",
    "token_frequencies",
]

DOCUMENT_SEPARATOR = "\n\n"
"""String joining several documents into a single token stream (perplexity, calibration)."""

_LOCAL_SUFFIXES = (".txt", ".jsonl", ".json")


def as_text_list(texts: str | Sequence[str], argument: str = "texts") -> list[str]:
    """Normalises a text argument to a list of documents, checking that every item is a string.

    Args:
        texts (`str` or `Sequence[str]`): One text or several documents.
        argument (`str`, *optional*, defaults to `"texts"`): Argument name used in error messages.

    Returns:
        `list[str]`: `[texts]` for a single string, else a new list of the documents.

    Raises:
        `TypeError`: If `texts` is neither a string nor a sequence of strings.

    Example:

    ```python
    >>> from compressed_embeddings.texts import as_text_list
    >>> as_text_list("one document")
    ['one document']
    ```
    """
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence):
        raise TypeError(f"`{argument}` must be a string or a sequence of strings, got {type(texts).__name__}.")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"`{argument}[{index}]` must be a string, got {type(text).__name__}.")
    return texts


# --------------------------------------------------------------------------------------------------------------------
# Text loading
# --------------------------------------------------------------------------------------------------------------------


def _looks_local(source: str) -> bool:
    """Whether `source` looks like a local path rather than a Hub dataset id (`name`, `org/name`, `name:config`): a
    data file's name (`.txt`, `.jsonl`, `.json`) or what `modeling.looks_like_local_path` takes for a path."""
    return source.lower().endswith(_LOCAL_SUFFIXES) or looks_like_local_path(source)


def _extract_text(record: Any, text_column: str, where: str) -> str:
    if isinstance(record, str):
        return record
    if isinstance(record, dict):
        if text_column not in record:
            raise KeyError(
                f"{where}: no field `{text_column}` (the `text_column`); available fields: {sorted(record)}."
            )
        value = record[text_column]
        if not isinstance(value, str):
            raise TypeError(f"{where}: field `{text_column}` must be a string, got {type(value).__name__}.")
        return value
    raise TypeError(f"{where}: expected an object or a string, got {type(record).__name__}.")


def _iter_jsonl(path: str, text_column: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if line.strip():
                yield _extract_text(json.loads(line), text_column, f"{path}:{line_number}")


def _iter_json(path: str, text_column: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        content = f.read()
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        # Many ".json" datasets are actually JSON lines.
        yield from _iter_jsonl(path, text_column)
        return
    if isinstance(data, dict) and isinstance(data.get(text_column), list):  # column-oriented
        data = data[text_column]
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise TypeError(f"{path}: expected a list of records, got {type(data).__name__}.")
    for index, record in enumerate(data):
        yield _extract_text(record, text_column, f"{path}[{index}]")


def _read_text_file(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _load_hub_dataset(source: str, split: str | None, text_column: str, max_documents: int | None) -> list[str]:
    name, _, config = source.partition(":")
    config = config or None
    try:
        import datasets

        dataset = datasets.load_dataset(name, config, split=split)
    except Exception as error:
        raise ValueError(
            f"could not load dataset {source!r}: {type(error).__name__}: {error}; "
            "pass a local .txt/.jsonl path instead"
        ) from error

    if isinstance(dataset, dict):  # DatasetDict
        splits = list(dataset)
        if len(splits) != 1:
            raise ValueError(f"Dataset {source!r} has several splits {splits}; pass `split=` to choose one.")
        dataset = dataset[splits[0]]
    if text_column not in dataset.column_names:
        raise KeyError(
            f"Dataset {source!r} has no column `{text_column}` (the `text_column`); "
            f"available columns: {dataset.column_names}."
        )
    if max_documents is not None:
        dataset = dataset.select(range(min(max_documents, len(dataset))))
    return list(dataset[text_column])


def load_texts(
    source: str,
    *,
    split: str | None = None,
    text_column: str = "text",
    max_documents: int | None = None,
) -> list[str]:
    """Loads a list of documents from a local file/folder or a Hub dataset.

    Supported sources:

    - a `.txt` file (or any other non-JSON file): the whole file is one document;
    - a folder: every `*.txt` file in it (sorted by name), one document per file;
    - a `.jsonl` file (one JSON object per line) or a `.json` file (a list of objects, a column-oriented object
      `{text_column: [...]}`, or JSON lines): the `text_column` field of each record;
    - anything else is treated as a Hub dataset id `"name[:config]"` (e.g. `"wikitext:wikitext-2-raw-v1"`), loaded
      with `datasets.load_dataset(name, config, split=split)`.

    A source that looks like a path (ends in `.txt`/`.jsonl`/`.json`, starts with `/`, `.` or `~`, or contains more
    than one `/`) but does not exist raises a `FileNotFoundError`. Documents are returned as-is (empty documents are
    kept).

    Args:
        source (`str`): Path or Hub dataset id.
        split (`str`, *optional*): Dataset split (Hub datasets only, e.g. `"test"`).
        text_column (`str`, *optional*, defaults to `"text"`): Field holding the text (JSON files and Hub datasets).
        max_documents (`int`, *optional*): Keep only the first `max_documents` documents.

    Returns:
        `list[str]`: The documents.

    Example:

    ```python
    >>> from compressed_embeddings.texts import load_texts  # doctest: +SKIP
    >>> texts = load_texts("data/wiki.test.jsonl", max_documents=100)  # doctest: +SKIP
    >>> texts = load_texts("wikitext:wikitext-2-raw-v1", split="test")  # needs access to the Hub  # doctest: +SKIP
    ```
    """
    if not isinstance(source, str) or not source:
        raise ValueError(f"`source` must be a non-empty path or dataset name, got {source!r}.")
    check_positive_int("max_documents", max_documents, allow_none=True)

    path = os.path.expanduser(source)
    if os.path.isdir(path):
        files = sorted(name for name in os.listdir(path) if name.lower().endswith(".txt"))
        if not files:
            raise ValueError(f"Folder {source!r} contains no .txt files.")
        if max_documents is not None:
            files = files[:max_documents]
        return [_read_text_file(os.path.join(path, name)) for name in files]

    if os.path.isfile(path):
        lower = path.lower()
        if lower.endswith(".jsonl"):
            documents: Iterator[str] = _iter_jsonl(path, text_column)
        elif lower.endswith(".json"):
            documents = _iter_json(path, text_column)
        else:
            documents = iter([_read_text_file(path)])
        texts = []
        for document in documents:
            if max_documents is not None and len(texts) >= max_documents:
                break
            texts.append(document)
        return texts

    if _looks_local(source):
        raise FileNotFoundError(f"No such file or directory: {source!r}.")
    return _load_hub_dataset(source, split, text_column, max_documents)


# --------------------------------------------------------------------------------------------------------------------
# Token counting
# --------------------------------------------------------------------------------------------------------------------


def token_frequencies(
    tokenizer: Any,
    texts: str | Sequence[str],
    vocab_size: int,
    *,
    add_special_tokens: bool = False,
    batch_size: int = 1000,
    show_progress: bool = True,
) -> torch.Tensor:
    """Counts how often each token id occurs in the tokenized `texts`.

    Args:
        tokenizer: Tokenizer used to tokenize each text independently.
        texts (`str` or `Sequence[str]`): One text or several documents.
        vocab_size (`int`): Length of the returned tensor (usually the number of rows of the embedding matrix,
            which may be larger than the tokenizer's vocabulary).
        add_special_tokens (`bool`, *optional*, defaults to `False`): Whether to count special tokens (BOS, ...).
        batch_size (`int`, *optional*, defaults to 1000): Number of texts tokenized per call.
        show_progress (`bool`, *optional*, defaults to `True`): Whether to display a progress bar.

    Returns:
        `torch.Tensor`: int64 tensor of shape `(vocab_size,)`.

    Example:

    ```python
    >>> from compressed_embeddings.evaluation import embedding_fidelity  # doctest: +SKIP
    >>> from compressed_embeddings.texts import token_frequencies  # doctest: +SKIP
    >>> counts = token_frequencies(tokenizer, texts, vocab_size=model.config.vocab_size)  # doctest: +SKIP
    >>> embedding_fidelity(E, E_hat, token_counts=counts).frequency_weighted_cosine  # doctest: +SKIP
    ```
    """
    check_positive_int("vocab_size", vocab_size)
    check_positive_int("batch_size", batch_size)
    documents = as_text_list(texts)
    counts = torch.zeros(vocab_size, dtype=torch.int64)
    starts = range(0, len(documents), batch_size)
    for start in tqdm(starts, desc="Counting tokens", unit="batch", disable=not show_progress):
        encoded = tokenizer(
            documents[start : start + batch_size], add_special_tokens=add_special_tokens, verbose=False
        )
        ids = [token_id for sequence in encoded["input_ids"] for token_id in sequence]
        if not ids:
            continue
        ids = torch.tensor(ids, dtype=torch.int64)
        max_id = int(ids.max())
        if max_id >= vocab_size or int(ids.min()) < 0:
            raise ValueError(
                f"Token id {max_id if max_id >= vocab_size else int(ids.min())} is outside [0, {vocab_size}); "
                "`vocab_size` must cover every id the tokenizer produces."
            )
        counts += torch.bincount(ids, minlength=vocab_size)
    return counts
