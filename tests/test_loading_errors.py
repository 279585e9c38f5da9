"""Loading paths that must refuse clearly instead of producing a model with random embeddings."""

import pytest
import torch
from conftest import run_python, tiny_model
from transformers import AutoModelForCausalLM

from compressed_embeddings import (
    CompressedEmbeddingConfig,
    NotACompressedCheckpointError,
    compress_model,
    compressed_model_class,
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    tiny_model("llama").save_pretrained(root / "stock")
    model = compress_model(
        tiny_model("llama"), CompressedEmbeddingConfig(method="svd", code_dim=8), show_progress=False
    )
    model.save_pretrained(root / "compressed")
    return root


def test_stock_checkpoint_through_compressed_class_points_to_compress(folders):
    from transformers import LlamaForCausalLM

    with pytest.raises(NotACompressedCheckpointError, match="compressed-embeddings compress") as error:
        compressed_model_class(LlamaForCausalLM).from_pretrained(folders / "stock")
    assert "stock, uncompressed" in str(error.value)


def test_compressed_class_needs_a_compressed_config():
    from transformers import LlamaConfig, LlamaForCausalLM

    with pytest.raises(NotACompressedCheckpointError, match="no `compressed_embedding` block"):
        compressed_model_class(LlamaForCausalLM)(
            LlamaConfig(
                vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37
            )
        )


def test_without_import_or_trust_remote_code_transformers_refuses(folders):
    code = """
import sys
from transformers import AutoModelForCausalLM
try:
    AutoModelForCausalLM.from_pretrained(sys.argv[1])
except ValueError as error:
    assert "trust_remote_code" in str(error), error
    assert "compressed_embeddings" not in sys.modules
    print("REFUSED")
else:
    raise SystemExit("loaded a compressed checkpoint without trust_remote_code")
"""
    assert "REFUSED" in run_python(code, str(folders / "compressed")).stdout


def test_stock_checkpoint_loads_unchanged_with_package_imported(folders, input_ids):
    """Importing the package changes nothing for stock checkpoints."""
    import compressed_embeddings  # noqa: F401

    model = AutoModelForCausalLM.from_pretrained(folders / "stock").eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        assert torch.equal(model(input_ids).logits, tiny_model("llama")(input_ids).logits)


def test_compress_refuses_twice_and_models_without_embeddings():
    from compressed_embeddings import UnsupportedModelError

    model = compress_model(
        tiny_model("llama"), CompressedEmbeddingConfig(method="svd", code_dim=8), show_progress=False
    )
    with pytest.raises(UnsupportedModelError, match="already compressed.*decompress_model"):
        compress_model(model, CompressedEmbeddingConfig(method="svd", code_dim=8))
    with pytest.raises(TypeError, match="PreTrainedModel"):
        compress_model(torch.nn.Linear(2, 2))
