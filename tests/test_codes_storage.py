"""Codes stored in float16 / bfloat16 / int8 (per-row scales) and int8 decoders, dequantised on the fly."""

import pytest
import torch
from conftest import tiny_model
from transformers import AutoModelForCausalLM

from compressed_embeddings import (
    CompressedEmbeddingConfig,
    CompressedEmbeddingConfigError,
    compress_embedding,
    compress_model,
)
from compressed_embeddings.layer import Int8Linear


def matrix(rows: int = 400, cols: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=generator)


@pytest.mark.parametrize(
    ("codes_dtype", "storage", "bytes_per_code", "tolerance"),
    [
        (None, torch.float32, 4, 0.0),
        ("float16", torch.float16, 2, 2e-3),
        ("bfloat16", torch.bfloat16, 2, 2e-2),
        ("int8", torch.int8, 1, 2e-2),
    ],
)
def test_storage_dtype_bytes_and_fidelity(codes_dtype, storage, bytes_per_code, tolerance):
    base = compress_embedding(matrix(), CompressedEmbeddingConfig(method="svd", code_dim=8), show_progress=False)
    layer, report = compress_embedding(
        matrix(), CompressedEmbeddingConfig(method="svd", code_dim=8, codes_dtype=codes_dtype), show_progress=False
    )
    assert layer.codes.dtype == storage
    scale_bytes = 400 * 4 if codes_dtype == "int8" else 0
    assert report.stored_bytes == 400 * 8 * bytes_per_code + scale_bytes + 32 * 8 * 4
    assert report.bytes_ratio_vs_fp32 == pytest.approx(400 * 32 * 4 / report.stored_bytes)
    assert report.bytes_ratio_vs_bf16 == pytest.approx(400 * 32 * 2 / report.stored_bytes)
    assert abs(report.mean_cosine - base[1].mean_cosine) <= tolerance
    # Lookups decode only the requested rows, from the dequantised codes.
    ids = torch.tensor([[0, 5, 399]])
    assert torch.allclose(layer(ids), layer.weight[ids], atol=1e-6)


def test_int8_codes_are_per_row_absmax_quantised():
    layer, _ = compress_embedding(
        matrix(), CompressedEmbeddingConfig(method="svd", code_dim=8, codes_dtype="int8"), show_progress=False
    )
    assert layer.codes.abs().amax(dim=1).eq(127).all(), "every row uses the full int8 range"
    assert not layer.codes.requires_grad and not layer.code_scales.requires_grad
    dense = layer.dense_codes()
    assert dense.dtype == torch.float32 and torch.equal(dense, layer.codes.float() * layer.code_scales[:, None])


def test_int8_codes_cannot_be_trained():
    with pytest.raises(CompressedEmbeddingConfigError, match="codes_dtype.*int8 codes cannot be trained"):
        CompressedEmbeddingConfig(codes_dtype="int8", freeze_codes=False)
    with pytest.raises(CompressedEmbeddingConfigError, match="codes_dtype"):
        CompressedEmbeddingConfig(codes_dtype="int4")


def _saved_and_reloaded(model, input_ids, folder):
    """Check the code-space head against the decoded matrix, save, reload (nothing missing, unexpected or mismatched,
    equal logits); return the reloaded model and the saved tensors' dtypes."""
    layer, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert layer.head_in_code_space
    hidden = torch.randn(2, 3, 32)
    with torch.no_grad():
        assert torch.allclose(head(hidden), hidden @ layer.weight.T, atol=1e-5), "code-space head == decoded head"
        expected = model(input_ids=input_ids).logits
    model.save_pretrained(folder)
    loaded, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    with torch.no_grad():
        assert torch.equal(loaded.eval()(input_ids=input_ids).logits, expected)
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as checkpoint:
        return loaded, {name: checkpoint.get_tensor(name).dtype for name in checkpoint.keys()}


@pytest.mark.parametrize("codes_dtype", ["int8", "float16"])
def test_quantised_codes_save_reload_and_tied_head(tmp_path, input_ids, codes_dtype):
    config = CompressedEmbeddingConfig(method="svd", code_dim=8, codes_dtype=codes_dtype)
    model = compress_model(tiny_model("llama"), config, show_progress=False)
    layer = model.get_input_embeddings()
    loaded, saved = _saved_and_reloaded(model, input_ids, tmp_path / "q")
    assert loaded.get_input_embeddings().codes.dtype == layer.codes.dtype
    assert saved["model.embed_tokens.codes"] == layer.codes.dtype  # the file holds the codes in their storage dtype


def test_int8_codes_survive_resize(input_ids):
    model = compress_model(
        tiny_model("llama"),
        CompressedEmbeddingConfig(method="svd", code_dim=8, codes_dtype="int8"),
        show_progress=False,
    )
    old = model.get_input_embeddings().dense_codes().clone()
    model.resize_token_embeddings(120)
    layer = model.get_input_embeddings()
    assert layer.codes.dtype == torch.int8 and layer.codes.shape == (120, 8) and layer.code_scales.shape == (120,)
    assert torch.allclose(layer.dense_codes()[:99], old, atol=1e-6), "re-quantising existing rows is exact"
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[3, 119]])).logits.shape == (1, 2, 120)


def test_nonlinear_head_caches_the_decoded_matrix_only_without_gradients():
    """Policy for non-linear decoders: decoded per call in training, cached in inference until weights change."""
    from compressed_embeddings import CompressedEmbedding, CompressedOutputHead

    torch.manual_seed(0)
    layer = CompressedEmbedding(50, 16, 4, decoder_hidden_dims=[8])
    head = CompressedOutputHead(layer)
    hidden = torch.randn(3, 16)
    with torch.no_grad():
        first = head(hidden)
        cached = head.__dict__["_cache"][1]
        assert torch.equal(head(hidden), first) and head.__dict__["_cache"][1] is cached
        layer.decoder[0].weight.mul_(2.0)  # an in-place change bumps the version: the cache is refreshed
        second = head(hidden)
        assert head.__dict__["_cache"][1] is not cached
        assert torch.allclose(second, hidden @ layer.weight.T, atol=1e-5)
    loss = head(hidden).sum()  # training: no cache, gradients reach the decoder
    loss.backward()
    assert "_cache" not in head.__dict__ and layer.decoder[0].weight.grad is not None


def test_int8_decoder_stores_a_quarter_of_the_bytes_and_keeps_its_int8_through_casts():
    float_layer, base = compress_embedding(
        matrix(), CompressedEmbeddingConfig(method="svd", code_dim=8), show_progress=False
    )
    layer, report = compress_embedding(
        matrix(), CompressedEmbeddingConfig(method="svd", code_dim=8, decoder_dtype="int8"), show_progress=False
    )
    decoder = layer.decoder
    assert isinstance(decoder, Int8Linear) and decoder.qweight.dtype == torch.int8 and layer.is_linear
    assert report.stored_bytes == 400 * 8 * 4 + 32 * 8 + 8 * 4  # codes + int8 weight + one scale per code column
    assert decoder.qweight.abs().amax(dim=0).eq(127).all(), "every column uses the full int8 range"
    error = (decoder.weight - float_layer.decoder.weight).abs()
    assert (error <= decoder.scales / 2 + 1e-7).all(), "rounded to the nearest step"
    assert abs(report.mean_cosine - base.mean_cosine) <= 1e-3
    ids = torch.tensor([[0, 5, 399]])
    assert torch.allclose(layer(ids), layer.weight[ids], atol=1e-6)
    layer.to(torch.float16)
    assert decoder.qweight.dtype == torch.int8 and decoder.scales.dtype == torch.float16
    assert layer(ids).dtype == torch.float16 and layer.compute_dtype == torch.float16


def test_int8_decoder_save_reload_tied_head_and_training(tmp_path, input_ids):
    config = CompressedEmbeddingConfig(method="autoencoder", code_dim=8, max_steps=5, decoder_dtype="int8")
    model = compress_model(tiny_model("llama"), config, show_progress=False)
    loaded, saved = _saved_and_reloaded(model, input_ids, tmp_path / "q")
    assert saved["model.embed_tokens.decoder.qweight"] == torch.int8
    # The int8 values stay; the scales and the bias train.
    decoder = loaded.train().get_input_embeddings().decoder
    loaded(input_ids=input_ids, labels=input_ids).loss.backward()
    assert not decoder.qweight.requires_grad and decoder.qweight.grad is None
    assert decoder.scales.grad.abs().sum() > 0 and decoder.bias.grad.abs().sum() > 0


def test_int8_decoder_is_one_linear_layer():
    with pytest.raises(CompressedEmbeddingConfigError, match="decoder_dtype"):
        CompressedEmbeddingConfig(decoder_dtype="int4")
    with pytest.raises(CompressedEmbeddingConfigError, match="decoder_dtype.*linear decoder"):
        CompressedEmbeddingConfig(decoder_dtype="int8", decoder_hidden_dims=[16])
