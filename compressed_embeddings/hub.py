"""Hub ids and uploads of compressed models: `push_to_hub`, `push_folder`, `hub_model_id`.

Importing the package calls `install()`, which gives every compressed model class (`CompressedModelMixin`):

- a model card: `save_pretrained(folder)` writes `README.md` (`compressed_embeddings.cards.write_model_card`);
- a `push_to_hub` that uploads that card: transformers' own method saves into a temporary folder, then replaces
  `README.md` by a generic card (or by the repo's current one) before committing.

A hand-written card already in the Hub repo (without `CARD_MARKER`) is kept, and only its metadata is completed.
Checkpoints loaded with `trust_remote_code=True` alone (without this package) push like any transformers model,
without a card.

Example:

```python
>>> from compressed_embeddings.hub import push_folder
>>> push_folder(model, "smollm2-tc10", "me/smollm2-tc10")  # doctest: +SKIP
```
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import ModelCard
from huggingface_hub.errors import EntryNotFoundError, HFValidationError
from huggingface_hub.utils import validate_repo_id
from transformers.utils import logging

from .cards import CARD_MARKER, _merge_metadata, compression_summary, write_model_card
from .modeling import CompressedModelMixin, looks_like_local_path

logger = logging.get_logger(__name__)

__all__ = ["CARD_MARKER", "hub_model_id", "install", "push_folder", "push_to_hub"]


def hub_model_id(name_or_path) -> str | None:
    """`name_or_path` if it is a Hub model id (`"user/name"` or `"name"`), None for a local path (see
    `modeling.looks_like_local_path`, or the name of a file or folder that exists) or nothing.

    Example:

    ```python
    >>> hub_model_id("HuggingFaceTB/SmolLM2-135M"), hub_model_id("/tmp/model"), hub_model_id("")
    ('HuggingFaceTB/SmolLM2-135M', None, None)
    ```
    """
    text = str(name_or_path or "")
    if not text or looks_like_local_path(name_or_path) or os.path.exists(os.path.expanduser(text)):
        return None
    try:
        validate_repo_id(text)
    except HFValidationError:
        return None
    return text


def _card_for_push(model, folder: Path, repo_id: str, token=None, tags=(), evaluation: Mapping | None = None) -> None:
    try:
        remote = ModelCard.load(repo_id, token=token)
    except EntryNotFoundError:
        remote = None
    if remote is not None and CARD_MARKER not in remote.content:
        _merge_metadata(remote, model, tags).save(folder / "README.md")
        logger.info(f"Kept the hand-written model card of {repo_id}; completed its metadata.")
    else:
        (folder / "README.md").unlink(missing_ok=True)
        write_model_card(model, folder, repo_id=repo_id, tags=tags, evaluation=evaluation)


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


def push_folder(
    model,
    folder,
    repo_id: str,
    *,
    token: bool | str | None = None,
    commit_message: str | None = None,
    evaluation: Mapping | None = None,
):
    """Upload a saved checkpoint folder (weights, code files, tokenizer, report, ...) of `model` to `repo_id`.

    The folder's README.md is first (re)written for `repo_id` as `push_to_hub` does (a hand-written card already in
    the repo is kept), with `evaluation` as in `model_card`. Used by `compressed-embeddings compress --push-to-hub`.
    Returns the `CommitInfo`.
    """
    from transformers.utils.hub import hf_api

    api = hf_api()
    repo_id = api.create_repo(repo_id, token=token, exist_ok=True).repo_id
    _card_for_push(model, Path(folder), repo_id, token=token, evaluation=evaluation)
    message = commit_message or f"Upload {type(model).__name__} compressed with {compression_summary(model)}"
    return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message, token=token)


def install() -> None:
    """Give `CompressedModelMixin` (this package's compressed classes) the model card and `push_to_hub`."""
    CompressedModelMixin.write_model_card = write_model_card
    CompressedModelMixin.push_to_hub = push_to_hub
