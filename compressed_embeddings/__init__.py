"""compressed_embeddings: shrink the token embedding of transformers models into codes + a small decoder.

```python
>>> from compressed_embeddings import CompressedEmbeddingConfig, compress_model  # doctest: +SKIP
>>> model = compress_model(model, CompressedEmbeddingConfig(compression_ratio=10))  # doctest: +SKIP
>>> model.save_pretrained("model-ae10")  # doctest: +SKIP
```

Importing the package registers the compressed model types with `AutoConfig` / `AutoModel*` (every family
transformers knows, each on its first lookup).
"""

from .auto import DEFAULT_FAMILIES, enable_lazy_registration, register_default_families, register_family
from .calibration import CalibrationStats, collect_calibration, random_token_calibration
from .cards import model_card
from .compress import (
    CompressionReport,
    UnsupportedModelError,
    compress_embedding,
    compress_model,
    decompress_model,
)
from .configuration import (
    CompressedEmbeddingConfig,
    CompressedEmbeddingConfigError,
    compressed_config_class,
)
from .hub import install as _install_hub
from .layer import CompressedEmbedding, CompressedOutputHead
from .losses import direction_loss
from .methods import MethodConfig, MethodOutput, register_method
from .modeling import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    DamagedCheckpointError,
    NotACompressedCheckpointError,
    UnsafeCheckpointError,
    compressed_model_class,
)
from .version import __version__

enable_lazy_registration()
register_default_families()
_install_hub()  # model card on save_pretrained, card-aware push_to_hub

__all__ = [
    "DEFAULT_FAMILIES",
    "CalibrationStats",
    "CheckpointMismatchError",
    "CompressedEmbedding",
    "CompressedEmbeddingConfig",
    "CompressedEmbeddingConfigError",
    "CompressedOutputHead",
    "CompressionReport",
    "CorruptCheckpointError",
    "DamagedCheckpointError",
    "MethodConfig",
    "MethodOutput",
    "NotACompressedCheckpointError",
    "UnsafeCheckpointError",
    "UnsupportedModelError",
    "__version__",
    "compress_embedding",
    "collect_calibration",
    "random_token_calibration",
    "compress_model",
    "compressed_config_class",
    "compressed_model_class",
    "decompress_model",
    "direction_loss",
    "model_card",
    "register_family",
    "register_method",
]
