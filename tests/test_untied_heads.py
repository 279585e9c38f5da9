"""Untied output heads: compressed with codes of their own (a setting per matrix), saved, reloaded, undone.

Every family's untied variant is saved and reloaded by both load paths in `tests/test_save_load.py`.
"""

import json

import pytest
import torch
from conftest import run_python, tiny_model
from transformers import AutoModelForCausalLM

from compressed_embeddings import (
    CompressedEmbedding,
    CompressedEmbeddingConfig,
    CompressedEmbeddingConfigError,
    CompressedOutputHead,
    compress_model,
    decompress_model,
)

IDS = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 3, 4, 90, 2, 1]])


def _untied_llama(**overrides):
    return tiny_model("llama", tie_word_embeddings=False, vocab_size=300, **overrides)


def test_an_untied_head_gets_codes_of_its_own_sized_by_its_own_config():
    model = _untied_llama()
    head_matrix = model.lm_head.weight.detach().clone()
    config = CompressedEmbeddingConfig(
        method="svd", code_dim=8, output_head=CompressedEmbeddingConfig(method="autoencoder", code_dim=4, epochs=2)
    )
    model = compress_model(model, config, show_progress=False)
    head = model.get_output_embeddings()
    assert isinstance(head, CompressedOutputHead) and not head.tied
    assert head.embedding is not model.get_input_embeddings() and isinstance(head.embedding, CompressedEmbedding)
    assert (head.embedding.code_dim, model.get_input_embeddings().code_dim) == (4, 8)
    names = [name for name, _ in model.named_parameters()]
    assert "lm_head.weight" not in names and "lm_head.embedding.codes" in names
    block = model.config.compressed_embedding
    assert block["output_head"]["method"] == "autoencoder" and block["output_head"]["num_embeddings"] == 300
    assert block["tied_output_head"] is False and block["output_head"]["tied_output_head"] is True
    report = model.compression_report
    assert report.output_head.method == "autoencoder" and report.output_head.original_bytes == head_matrix.numel() * 4
    assert "output head (own codes)" in str(report)
    with torch.no_grad():  # the head's logits are those of its decoded matrix
        hidden = model.model(IDS).last_hidden_state
        torch.testing.assert_close(model(IDS).logits, hidden @ head.embedding.weight.T, rtol=1e-4, atol=1e-5)


def test_input_only_keeps_an_untied_head_and_output_head_is_ignored_for_a_tied_one(caplog):
    model = _untied_llama()
    original = model.lm_head.weight.detach().clone()
    model = compress_model(
        model, CompressedEmbeddingConfig(method="svd", code_dim=8, compress_output_head=False), show_progress=False
    )
    assert type(model.lm_head) is torch.nn.Linear and torch.equal(model.lm_head.weight, original)
    assert model.config.compressed_embedding["output_head"] is None
    with pytest.raises(CompressedEmbeddingConfigError, match="output_head"):
        CompressedEmbeddingConfig(compress_output_head=False, output_head=CompressedEmbeddingConfig())

    from transformers.utils import logging

    tied = tiny_model("llama", vocab_size=300)
    logging.enable_propagation()
    try:
        config = CompressedEmbeddingConfig(method="svd", code_dim=8, output_head=CompressedEmbeddingConfig())
        tied = compress_model(tied, config, show_progress=False)
    finally:
        logging.disable_propagation()
    assert "config.output_head is ignored" in caplog.text
    assert tied.get_output_embeddings().tied and tied.config.compressed_embedding["output_head"] is None


def test_output_head_block_validation():
    head = CompressedEmbeddingConfig(method="svd", code_dim=4)
    config = CompressedEmbeddingConfig(output_head=head.to_dict())
    assert isinstance(config.output_head, CompressedEmbeddingConfig) and config.output_head.method == "svd"
    data = json.loads(json.dumps(config.to_dict()))
    assert data["format_version"] == 3 and CompressedEmbeddingConfig.from_dict(data) == config
    with pytest.raises(CompressedEmbeddingConfigError, match="output_head"):
        CompressedEmbeddingConfig(output_head=CompressedEmbeddingConfig(output_head=head))
    with pytest.raises(CompressedEmbeddingConfigError, match="output_head"):
        CompressedEmbeddingConfig(output_head="svd")
    with pytest.raises(CompressedEmbeddingConfigError, match="output_head"):
        CompressedEmbeddingConfig(tied_output_head=True, output_head=head)
    resolved = {**data, "num_embeddings": 10, "embedding_dim": 8, "code_dim": 4}
    with pytest.raises(CompressedEmbeddingConfigError, match="lacks"):  # its head must describe a built layer too
        CompressedEmbeddingConfig.from_dict(resolved, require_resolved=True)


def test_decompress_and_resize_an_untied_compressed_head(tmp_path):
    model = compress_model(_untied_llama(), CompressedEmbeddingConfig(method="svd", code_dim=8), show_progress=False)
    with torch.no_grad():
        before = model(IDS).logits
    model.resize_token_embeddings(310)
    assert model.lm_head.embedding.num_embeddings == 310 and model.lm_head.out_features == 310
    assert model.config.compressed_embedding["output_head"]["num_embeddings"] == 310
    model.save_pretrained(tmp_path / "resized")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "resized").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(IDS).logits[..., :300], before, rtol=1e-4, atol=1e-5)
        decoded = again.lm_head.embedding.weight.detach().clone()
        stock = decompress_model(again)
        assert type(stock.lm_head) is torch.nn.Linear and torch.equal(stock.lm_head.weight, decoded)
        assert stock.lm_head.weight is not stock.model.embed_tokens.weight
        torch.testing.assert_close(stock(IDS).logits[..., :300], before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["import", "remote"])
def test_a_tied_head_stays_tied_whatever_tie_word_embeddings_says(tmp_path, mode):
    """Tools that merge adapters (PEFT) set `tie_word_embeddings=False`: the compressed block decides, never a random
    head."""
    model = compress_model(
        tiny_model("llama"), CompressedEmbeddingConfig(method="svd", code_dim=8), show_progress=False
    )
    with torch.no_grad():
        reference = model(IDS).logits
    model.config.tie_word_embeddings = False
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["compressed_embedding"]["tied_output_head"] is True
    torch.save(reference, tmp_path / "reference.pt")
    code = f"""
import sys, torch
from transformers import AutoModelForCausalLM
if sys.argv[1] == "import":
    import compressed_embeddings
model, info = AutoModelForCausalLM.from_pretrained(sys.argv[2], trust_remote_code=True, output_loading_info=True)
assert info["missing_keys"] == set() or info["missing_keys"] == [], info
head = model.get_output_embeddings()
assert type(head).__name__ == "CompressedOutputHead" and head.embedding is model.get_input_embeddings()
with torch.no_grad():
    logits = model.eval()(torch.tensor({IDS.tolist()})).logits
torch.testing.assert_close(logits, torch.load(sys.argv[2] + "/reference.pt"), rtol=1e-5, atol=1e-6)
print("ok", type(model).__module__)
"""
    out = run_python(code, mode, str(tmp_path)).stdout
    assert "ok" in out and (("transformers_modules" in out) == (mode == "remote"))


def test_dry_run_counts_the_untied_head(tmp_path):
    from compressed_embeddings.cli import dry_run_sizes

    model = _untied_llama()
    model.save_pretrained(tmp_path / "source")
    config = CompressedEmbeddingConfig(method="svd", code_dim=8)
    sizes = dry_run_sizes(str(tmp_path / "source"), config, calibration="none")
    compressed = compress_model(model, config, show_progress=False)
    compressed.save_pretrained(tmp_path / "out")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        written = sum(f.get_tensor(key).nbytes for key in f.keys())
    assert sizes.exact and sizes.head_stored_bytes == compressed.compression_report.output_head.stored_bytes
    assert sizes.checkpoint_weight_bytes == written


def test_a_damaged_untied_head_is_refused(tmp_path):
    """The checksums and value checks cover the head's own codes as well as the input embedding's."""
    from safetensors.torch import load_file, save_file

    from compressed_embeddings import DamagedCheckpointError

    model = compress_model(_untied_llama(), CompressedEmbeddingConfig(method="svd", code_dim=8), show_progress=False)
    model.save_pretrained(tmp_path)
    assert "lm_head.embedding.codes" in model.config.compressed_embedding["tensor_sha256"]
    weights = load_file(str(tmp_path / "model.safetensors"))
    weights["lm_head.embedding.codes"][3, 1] += 1.0
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(DamagedCheckpointError, match="lm_head.embedding.codes"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
