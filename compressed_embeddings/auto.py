"""Registration of compressed families with transformers' `AutoConfig` and `AutoModel*` classes.

Importing `compressed_embeddings` registers `DEFAULT_FAMILIES`; `compress_model` registers the family of
any model it compresses; `register_family("mistral")` registers one by hand. Without the package (or for a
family not registered), a checkpoint still loads with `trust_remote_code=True` through its `auto_map`.
"""

import transformers
from transformers import AutoConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .configuration import compressed_config_class
from .modeling import compressed_model_class, family_classes

#: Families registered when the package is imported.
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
    if model_type not in CONFIG_MAPPING:
        raise ValueError(
            f"Unknown model_type {model_type!r}: transformers {transformers.__version__} has no such family."
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
    if model_type and model_type in CONFIG_MAPPING:
        register_family(model_type)


def register_default_families() -> None:
    for model_type in DEFAULT_FAMILIES:
        register_family(model_type)
