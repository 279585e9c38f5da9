"""Registration of compressed families with transformers' `AutoConfig` and `AutoModel*` classes.

Importing `compressed_embeddings` makes every family transformers knows loadable through the Auto classes: a
`compressed_<family>` model type is registered the first time transformers looks it up (`AutoConfig` asks whether
it knows a `model_type` before anything else), so the import stays fast and no family needs a call by hand.
`register_family("mistral")` registers one eagerly; `compress_model` registers the family it compresses. Without
the package, a checkpoint still loads with `trust_remote_code=True` through its `auto_map`.
"""

import transformers
from transformers import AutoConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import logging

from .configuration import MODEL_TYPE_PREFIX, compressed_config_class
from .modeling import compressed_model_class, family_classes

logger = logging.get_logger(__name__)

#: Families registered when the package is imported (every other family is registered on first lookup).
DEFAULT_FAMILIES = ("bert", "roberta", "distilbert", "gpt2", "llama", "qwen2", "qwen3", "mistral", "gemma3_text")

_REGISTERED: set[str] = set()


def register_family(model_type: str) -> None:
    """Register `compressed_<model_type>` with AutoConfig and every Auto class the family has.

    Example:

    ```python
    >>> from compressed_embeddings import register_family
    >>> register_family("phi3")
    >>> from transformers import AutoConfig
    >>> AutoConfig.for_model("compressed_phi3").model_type
    'compressed_phi3'
    ```
    """
    if model_type in _REGISTERED:
        return
    if model_type.startswith(MODEL_TYPE_PREFIX) or model_type not in _STOCK_MODEL_TYPES:
        raise ValueError(
            f"Unknown model_type {model_type!r}: transformers {transformers.__version__} has no such family "
            "(pass the base family's model_type, e.g. 'llama' for 'compressed_llama'; a newer transformers may know "
            "it)."
        )
    config_class = compressed_config_class(CONFIG_MAPPING[model_type])
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    for auto_name, class_name in family_classes(model_type).items():
        base = getattr(transformers, class_name, None)
        if base is not None:
            getattr(transformers, auto_name).register(config_class, compressed_model_class(base), exist_ok=True)
    _REGISTERED.add(model_type)


def register_model_class(model_class: type) -> None:
    """Register the family of a (stock) model class, if transformers knows it."""
    model_type = getattr(getattr(model_class, "config_class", None), "model_type", None)
    if model_type and model_type in _STOCK_MODEL_TYPES:
        register_family(model_type)


def register_default_families() -> None:
    for model_type in DEFAULT_FAMILIES:
        register_family(model_type)


# ---------------------------------------------------------------------- lazy registration
# `CONFIG_MAPPING` answers `model_type in CONFIG_MAPPING` (what AutoConfig.from_pretrained / for_model ask first) from
# its stock names and its `_extra_content`, the dict that `AutoConfig.register` fills. Wrapping that dict so that a
# miss on `compressed_<family>` registers the family makes every family loadable by import alone, at the cost of
# nothing until a compressed checkpoint is loaded.
_STOCK_MODEL_TYPES = frozenset(getattr(CONFIG_MAPPING, "_mapping", {}))


def _register_on_lookup(key: object) -> bool:
    """Register `compressed_<family>` if `key` names one transformers knows; whether it is now registered."""
    if not (isinstance(key, str) and key.startswith(MODEL_TYPE_PREFIX)):
        return False
    family = key[len(MODEL_TYPE_PREFIX) :]
    if family not in _STOCK_MODEL_TYPES:
        logger.warning(
            f"A checkpoint has model_type {key!r}, but transformers {transformers.__version__} has no {family!r} "
            "family to build it on: upgrade transformers (`pip install -U transformers`)."
        )
        return False
    try:
        register_family(family)
    except Exception as error:  # a family whose classes cannot be wrapped: say so, let transformers report the miss
        logger.warning(f"Could not register {key!r} ({type(error).__name__}: {error}).")
        return False
    return True


class _LazyFamilies(dict):
    """`CONFIG_MAPPING._extra_content`, registering a compressed family when transformers first asks for it."""

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or (_register_on_lookup(key) and dict.__contains__(self, key))


def enable_lazy_registration() -> bool:
    """Make `compressed_<family>` model types register themselves on first lookup; whether that could be set up
    (it relies on `CONFIG_MAPPING._extra_content`, a dict in every transformers 5 release so far)."""
    extra = getattr(CONFIG_MAPPING, "_extra_content", None)
    if isinstance(extra, _LazyFamilies):
        return True
    if type(extra) is not dict or not _STOCK_MODEL_TYPES:
        logger.info("transformers' config mapping has changed: only registered families load by import.")
        return False
    CONFIG_MAPPING._extra_content = _LazyFamilies(extra)
    return True
