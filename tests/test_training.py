"""A compressed model trains like any transformers model: grads, optimiser steps, resizing, gradient checkpointing,
half precision, the layer and head on their own, Gemma's embedding scale, and decompression back to stock."""

import copy
import json
import math

import pytest
import torch
import transformers
from conftest import run_python, tiny_model
from torch import nn
from torch.nn import functional as F

from compressed_embeddings import (
    CompressedEmbedding,
    CompressedEmbeddingConfig,
    CompressedOutputHead,
    compress_model,
    decompress_model,
)

AUTO = {"bert": transformers.AutoModelForMaskedLM}
NO_DROPOUT = {
    "bert": dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    "llama": {},
    "gemma3_text": {},
    "qwen2": {},
}


def compressed(family: str, seed: int = 0, model_overrides: dict | None = None, **config):
    model = tiny_model(family, seed=seed, **NO_DROPOUT.get(family, {}), **(model_overrides or {}))
    return compress_model(model, CompressedEmbeddingConfig(method="svd", code_dim=8, **config), show_progress=False)


def loader(family: str):
    return AUTO.get(family, transformers.AutoModelForCausalLM)


def lm_loss(model, input_ids):
    return model(input_ids=input_ids, labels=input_ids).loss


# ---------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("family", ["llama", "bert"])
def test_codes_frozen_by_default_decoder_trains(family, input_ids, tmp_path):
    model = compressed(family).train()
    layer = model.get_input_embeddings()
    assert isinstance(layer, CompressedEmbedding)
    assert layer.codes.requires_grad is False
    assert all(p.requires_grad for p in layer.decoder.parameters())
    lm_loss(model, input_ids).backward()
    assert layer.codes.grad is None
    assert layer.decoder.weight.grad is not None and layer.decoder.weight.grad.abs().sum() > 0
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert not any(name.endswith(".codes") for name in trainable)

    # The choice survives save + reload (loading replaces every parameter).
    model.save_pretrained(tmp_path)
    reloaded = loader(family).from_pretrained(tmp_path)
    assert reloaded.get_input_embeddings().codes.requires_grad is False
    assert reloaded.get_input_embeddings().decoder.weight.requires_grad is True
    reloaded = loader(family).from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert reloaded.get_input_embeddings().codes.requires_grad is False


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_unfrozen_codes_get_grads(family, input_ids, tmp_path):
    model = compressed(family, freeze_codes=False).train()
    layer = model.get_input_embeddings()
    assert layer.codes.requires_grad is True
    lm_loss(model, input_ids).backward()
    assert layer.codes.grad is not None and layer.codes.grad.abs().sum() > 0
    assert layer.decoder.weight.grad.abs().sum() > 0
    model.save_pretrained(tmp_path)
    assert loader(family).from_pretrained(tmp_path).get_input_embeddings().codes.requires_grad is True


@pytest.mark.parametrize("freeze_codes", [True, False])
def test_optimizer_step_keeps_tied_head_consistent(freeze_codes, input_ids):
    model = compressed("llama", freeze_codes=freeze_codes).train()
    layer, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert isinstance(head, CompressedOutputHead) and head.embedding is layer
    codes, decoder = layer.codes.detach().clone(), layer.decoder.weight.detach().clone()
    with torch.no_grad():
        logits_before = model(input_ids=input_ids).logits
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    lm_loss(model, input_ids).backward()
    optimizer.step()

    assert not torch.equal(layer.decoder.weight, decoder)
    assert torch.equal(layer.codes, codes) is freeze_codes
    with torch.no_grad():
        logits_after = model(input_ids=input_ids).logits
        hidden = model.model(input_ids=input_ids).last_hidden_state
        assert not torch.allclose(logits_after, logits_before)
        # Input and output stay one matrix: the head multiplies by the updated decoded embedding.
        assert torch.equal(head.weight, layer.weight)
        assert torch.allclose(logits_after, hidden @ layer.weight.T, atol=1e-5)
        assert torch.allclose(layer(input_ids), layer.weight[input_ids], atol=1e-6)


def test_untied_head_trains_its_own_decoder(input_ids):
    model = compressed("qwen2").train()
    head = model.get_output_embeddings()
    assert isinstance(head, CompressedOutputHead) and not head.tied  # compressed with codes of its own
    lm_loss(model, input_ids).backward()
    assert head.embedding.decoder.weight.grad.abs().sum() > 0 and head.embedding.codes.grad is None  # codes frozen
    assert model.get_input_embeddings().decoder.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- resizing
def _bias_params(model):
    return model.cls.predictions.bias, model.cls.predictions.decoder.bias


@pytest.mark.parametrize(
    "family, new_size, pad_to, expected",
    [
        ("bert", 120, None, 120),
        ("bert", 100, 16, 112),
        ("bert", 50, None, 50),
        ("bert", None, 64, 128),
        ("llama", 130, None, 130),
        ("llama", 60, 8, 64),
        ("qwen2", 120, None, 120),  # untied head: its own codes are resized too
        ("qwen2", 40, None, 40),
    ],
)
def test_resize_token_embeddings(family, new_size, pad_to, expected, tmp_path):
    model = compressed(family, freeze_codes=family != "llama")
    layer = model.get_input_embeddings()
    old_codes = layer.codes.detach().clone()
    if family == "bert":
        with torch.no_grad():
            model.cls.predictions.bias.normal_()
        old_bias = model.cls.predictions.bias.detach().clone()
    if family == "qwen2":  # untied: the head has codes of its own
        old_head = model.lm_head.embedding.codes.detach().clone()
    requires_grad = layer.codes.requires_grad

    returned = model.resize_token_embeddings(new_size, pad_to_multiple_of=pad_to)
    layer = model.get_input_embeddings()
    assert returned is layer and isinstance(layer, CompressedEmbedding)
    assert layer.codes.shape == (expected, 8) and layer.num_embeddings == expected
    assert layer.codes.requires_grad is requires_grad
    keep = min(expected, 99)
    assert torch.equal(layer.codes[:keep], old_codes[:keep])
    assert model.config.vocab_size == expected
    assert model.config.compressed_embedding["num_embeddings"] == expected
    head = model.get_output_embeddings()
    if family == "bert":
        bias, decoder_bias = _bias_params(model)
        assert isinstance(head, CompressedOutputHead)
        assert bias is head.bias and bias is decoder_bias and bias.shape == (expected,)
        assert torch.equal(bias[:keep], old_bias[:keep])
        assert dict(model.named_parameters())["cls.predictions.bias"] is bias
    elif family == "llama":
        assert isinstance(head, CompressedOutputHead) and head.embedding is layer and head.out_features == expected
    else:  # the untied head's own codes are resized too
        assert isinstance(head, CompressedOutputHead) and not head.tied and head.out_features == expected
        assert torch.equal(head.embedding.codes[:keep], old_head[:keep])
        assert model.config.compressed_embedding["output_head"]["num_embeddings"] == expected

    ids = torch.arange(expected).remainder(expected).reshape(1, -1)[:, :40]
    ids[0, -1] = expected - 1  # the last (possibly new) token
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], expected) and torch.isfinite(logits).all()

    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["vocab_size"] == expected and saved["compressed_embedding"]["num_embeddings"] == expected
    reloaded, info = loader(family).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"], info
    assert not info["mismatched_keys"], info
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, logits)
    if family == "bert":
        bias, decoder_bias = _bias_params(reloaded)
        assert bias is decoder_bias is reloaded.get_output_embeddings().bias


def test_resize_untied_bert_head_keeps_its_own_bias(tmp_path):
    model = compressed("bert", compress_output_head=False)
    head = model.get_output_embeddings()
    # Untied, as in stock BERT built with tie_word_embeddings=False: the decoder owns its bias.
    assert isinstance(head, nn.Linear) and head.bias is not model.cls.predictions.bias
    with torch.no_grad():
        head.bias.normal_()
    old_weight, old_bias = head.weight.detach().clone(), head.bias.detach().clone()
    model.resize_token_embeddings(120)
    head = model.get_output_embeddings()
    assert isinstance(head, nn.Linear) and head.weight.shape == (120, 32) and head.out_features == 120
    assert torch.equal(head.weight[:99], old_weight) and torch.equal(head.bias[:99], old_bias)
    assert head.bias.shape == (120,) and head.bias is not model.cls.predictions.bias
    ids = torch.tensor([[5, 119]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    assert expected.shape == (1, 2, 120)
    model.save_pretrained(tmp_path / "resized")
    loaded, info = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "resized", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad():
        assert torch.equal(loaded.eval()(input_ids=ids).logits, expected)


def test_resize_keeps_the_model_trainable(input_ids):
    model = compressed("bert", freeze_codes=False).train()
    model.resize_token_embeddings(128)
    loss = lm_loss(model, input_ids)
    loss.backward()
    layer = model.get_input_embeddings()
    assert layer.codes.grad.shape == (128, 8) and layer.codes.grad.abs().sum() > 0
    assert model.cls.predictions.bias.grad.shape == (128,)


def test_resize_below_padding_index_drops_it():
    model = compressed("llama", model_overrides={"pad_token_id": 90})
    layer = model.get_input_embeddings()
    assert layer.padding_idx == 90
    model.resize_token_embeddings(50)
    assert layer.padding_idx is None and layer.zero_padding_row is False
    assert model.config.compressed_embedding["padding_idx"] is None
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[3, 49]])).logits.shape == (1, 2, 50)


def test_resize_noop_and_errors():
    model = compressed("llama")
    layer = model.get_input_embeddings()
    assert model.resize_token_embeddings() is layer and layer.num_embeddings == 99
    assert model.resize_token_embeddings(99) is layer and layer.num_embeddings == 99
    for bad in (0, -5):
        with pytest.raises(ValueError, match=r"new_num_tokens must be a positive integer, got " + str(bad)):
            model.resize_token_embeddings(bad)
    assert layer.num_embeddings == 99 and model.config.vocab_size == 99


# ---------------------------------------------------------------------------------------------- checkpointing
@pytest.mark.filterwarnings("ignore:.*is deprecated.*:FutureWarning")
@pytest.mark.parametrize("family", ["llama", "bert"])
@pytest.mark.parametrize("freeze_codes", [True, False])
def test_gradient_checkpointing_gives_the_same_grads(family, freeze_codes, input_ids):
    plain = compressed(family, freeze_codes=freeze_codes).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.gradient_checkpointing_enable()
    assert checkpointed.is_gradient_checkpointing and not plain.is_gradient_checkpointing
    calls = []
    for module in checkpointed.modules():
        if getattr(module, "gradient_checkpointing", False) and hasattr(module, "_gradient_checkpointing_func"):
            module._gradient_checkpointing_func = lambda *args, _func=module._gradient_checkpointing_func, **kwargs: (
                calls.append(1) or _func(*args, **kwargs)
            )
    assert checkpointed.get_output_embeddings().embedding is checkpointed.get_input_embeddings()
    loss_plain, loss_checkpointed = lm_loss(plain, input_ids), lm_loss(checkpointed, input_ids)
    assert len(calls) == 2  # both transformer blocks ran checkpointed
    loss_plain.backward()
    loss_checkpointed.backward()
    assert torch.allclose(loss_plain, loss_checkpointed, atol=1e-6)
    grads_plain = {n: p.grad for n, p in plain.named_parameters()}
    grads_checkpointed = {n: p.grad for n, p in checkpointed.named_parameters()}
    assert grads_plain.keys() == grads_checkpointed.keys()
    with_grad = 0
    for name, grad in grads_plain.items():
        other = grads_checkpointed[name]
        assert (grad is None) == (other is None), name
        if grad is not None:
            with_grad += 1
            assert torch.allclose(grad, other, atol=1e-6, rtol=1e-5), name
    assert with_grad > 10
    layer = checkpointed.get_input_embeddings()
    assert layer.decoder.weight.grad.abs().sum() > 0
    assert (layer.codes.grad is None) is freeze_codes
    # A layer deep in the stack gets its grads through the checkpointed blocks.
    deep = [n for n in grads_checkpointed if "layer" in n and ".1." in n and grads_checkpointed[n] is not None]
    assert deep and all(grads_checkpointed[n].abs().sum() > 0 for n in deep)


# ---------------------------------------------------------------------------------------------- half precision
@pytest.mark.parametrize("family", ["llama", "bert"])
def test_load_in_half_precision(family, input_ids, tmp_path):
    model = compressed(family)
    with torch.no_grad():
        reference = model(input_ids=input_ids).logits
    model.save_pretrained(tmp_path)
    for dtype, atol in ((torch.bfloat16, 5e-2), (torch.float16, 1e-2)):
        loaded = loader(family).from_pretrained(tmp_path, dtype=dtype)
        layer = loaded.get_input_embeddings()
        assert isinstance(layer, CompressedEmbedding) and loaded.dtype == dtype
        assert layer.codes.dtype == dtype and all(p.dtype == dtype for p in layer.decoder.parameters())
        head = loaded.get_output_embeddings()
        assert isinstance(head, CompressedOutputHead) and head.embedding is layer
        with torch.no_grad():
            logits = loaded(input_ids=input_ids).logits
        assert logits.dtype == dtype
        assert torch.allclose(logits.float(), reference, atol=atol), (logits.float() - reference).abs().max()
        assert not torch.equal(logits.float(), reference)  # it really ran in low precision


@pytest.mark.parametrize("convert", [lambda m: m.half(), lambda m: m.to(torch.bfloat16)], ids=["half", "to_bf16"])
def test_cast_a_compressed_model(convert, input_ids):
    model = compressed("gemma3_text")
    with torch.no_grad():
        reference = model(input_ids=input_ids).logits
    cast = convert(copy.deepcopy(model))
    layer = cast.get_input_embeddings()
    dtype = layer.codes.dtype
    assert dtype in (torch.float16, torch.bfloat16)
    assert layer.decoder.weight.dtype == dtype and cast.get_output_embeddings().embedding is layer
    with torch.no_grad():
        rows = layer(input_ids)
        logits = cast(input_ids=input_ids).logits
    assert rows.dtype == dtype and logits.dtype == dtype
    assert torch.allclose(logits.float(), reference, atol=5e-2)
    # Training in half precision works too.
    cast.train()
    lm_loss(cast, input_ids).backward()
    assert layer.decoder.weight.grad.dtype == dtype and torch.isfinite(layer.decoder.weight.grad).all()


# ---------------------------------------------------------------------------------------------- the layer alone
def _layer(hidden_dims=(), bias=True, **kwargs):
    torch.manual_seed(0)
    layer = CompressedEmbedding(20, 12, 4, decoder_hidden_dims=hidden_dims, decoder_bias=bias, **kwargs)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    return layer


def test_forward_decodes_only_looked_up_rows():
    layer = _layer(embed_scale=2.5)
    seen = []
    layer.decoder.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    ids = torch.tensor([[1, 5, 5], [19, 0, 3]])
    rows = layer(ids)
    assert seen == [torch.Size([2, 3, 4])]  # never the V x k table
    assert rows.shape == (2, 3, 12)
    weight = layer.weight
    assert weight.shape == (20, 12)
    assert torch.allclose(rows, weight[ids] * 2.5, atol=1e-6)
    assert torch.allclose(weight, layer.decoder(layer.codes))


def test_padding_semantics():
    ids = torch.tensor([[3, 19, 19, 2]])
    layer = _layer(padding_idx=-1, zero_padding_row=True, freeze_codes=False)
    assert layer.padding_idx == 19 and layer.zero_padding_row
    rows = layer(ids)
    assert torch.equal(rows[0, 1:3], torch.zeros(2, 12)) and rows[0, 0].abs().sum() > 0
    assert torch.equal(layer.weight[19], torch.zeros(12)) and layer.weight[18].abs().sum() > 0
    rows.sum().backward()
    assert torch.equal(layer.codes.grad[19], torch.zeros(4)) and layer.codes.grad[3].abs().sum() > 0

    kept = _layer(padding_idx=19, zero_padding_row=False)
    assert kept.padding_idx == 19 and not kept.zero_padding_row
    assert kept(ids)[0, 1].abs().sum() > 0  # the padding row decodes like any other row
    assert not _layer(padding_idx=None, zero_padding_row=True).zero_padding_row
    for bad in (20, -21):  # like nn.Embedding, the padding index must be a row
        with pytest.raises(ValueError, match=f"padding_idx must be in \\[-20, 20\\), got {bad}"):
            _layer(padding_idx=bad, zero_padding_row=True)


def test_extra_repr_mentions_code_dim_and_ratio():
    layer = _layer()
    text = repr(layer)
    stored = 20 * 4 + 4 * 12 + 12
    assert "code_dim=4" in text and f"ratio={20 * 12 / stored:.2f}x" in text
    assert "num_embeddings=20" in text and "embedding_dim=12" in text and f"stored_bytes={4 * stored}" in text
    assert "embed_scale=3" in repr(_layer(embed_scale=3.0)) and "embed_scale" not in text
    assert "padding_idx=2" in repr(_layer(padding_idx=2))
    assert "decoder=mlp" in repr(_layer(hidden_dims=[6]))


@pytest.mark.parametrize("hidden_dims", [(), (16,), (8, 8)], ids=["linear", "mlp", "mlp2"])
@pytest.mark.parametrize("decoder_bias", [True, False])
@pytest.mark.parametrize("head_bias", [True, False])
def test_output_head_logits_equal_hidden_times_weight(hidden_dims, decoder_bias, head_bias):
    layer = _layer(hidden_dims, decoder_bias, padding_idx=0, zero_padding_row=True)
    head = CompressedOutputHead(layer, bias=head_bias)
    if head_bias:
        with torch.no_grad():
            head.bias.normal_()
    assert head.embedding is layer and head.in_features == 12 and head.out_features == 20
    assert ("code-space" in repr(head)) is (not hidden_dims)
    assert "embedding" not in dict(head.named_modules()) and set(dict(head.named_parameters())) <= {"bias"}
    hidden = torch.randn(3, 5, 12)
    logits = head(hidden)
    expected = hidden @ layer.weight.T + (head.bias if head_bias else 0)
    assert logits.shape == (3, 5, 20)
    assert torch.allclose(logits, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(logits[..., 0], head.bias[0].expand(3, 5) if head_bias else torch.zeros(3, 5), atol=1e-6)
    assert torch.equal(head.weight, layer.weight)

    # Grads agree with those of the decoded path.
    target = torch.randint(0, 20, (15,))
    F.cross_entropy(logits.reshape(-1, 20), target).backward()
    grads = [p.grad.clone() for p in layer.decoder.parameters()]
    layer.zero_grad()
    F.cross_entropy(expected.reshape(-1, 20), target).backward()
    for grad, p in zip(grads, layer.decoder.parameters()):
        assert torch.allclose(grad, p.grad, atol=1e-5)


# ---------------------------------------------------------------------------------------------- Gemma
def _low_rank_stock(family, rank=8, **overrides):
    """A stock tiny model whose embedding has rank `rank` (and a zero padding row), so SVD at k = rank is exact."""
    model = tiny_model(family, **overrides)
    weight = model.get_input_embeddings().weight
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        low = torch.randn(weight.shape[0], rank, generator=generator) @ torch.randn(
            rank, weight.shape[1], generator=generator
        )
        weight.copy_(low / math.sqrt(rank) * 0.05)
        if model.config.pad_token_id is not None:
            weight[model.config.pad_token_id] = 0
    return model


def test_gemma3_keeps_the_embedding_scale(input_ids):
    stock = _low_rank_stock("gemma3_text")
    stock_embedding = stock.get_input_embeddings()
    assert type(stock_embedding).__name__ == "Gemma3TextScaledWordEmbedding"
    scale = math.sqrt(32)
    with torch.no_grad():
        reference = stock(input_ids=input_ids).logits
        stock_rows = stock_embedding(input_ids)
    model = compress_model(
        copy.deepcopy(stock), CompressedEmbeddingConfig(method="svd", code_dim=8), show_progress=False
    )
    layer, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert isinstance(head, CompressedOutputHead) and head.embedding is layer
    assert layer.embed_scale == pytest.approx(scale, rel=1e-6)
    assert model.config.compressed_embedding["embed_scale"] == pytest.approx(scale, rel=1e-6)
    with torch.no_grad():
        rows = layer(input_ids)
        logits = model(input_ids=input_ids).logits
        hidden = model.model(input_ids=input_ids).last_hidden_state
        assert torch.allclose(rows, stock_rows, atol=1e-5)
        assert (logits - reference).abs().max() < 1e-4
        # The tied head multiplies by the unscaled matrix (like Gemma's lm_head.weight is embed_tokens.weight).
        assert torch.allclose(layer.weight, stock_embedding.weight, atol=1e-5)
        assert torch.allclose(head(hidden), hidden @ stock_embedding.weight.T, atol=1e-4)
        assert not torch.allclose(head(hidden), hidden @ (scale * stock_embedding.weight).T, atol=1e-2)


# ---------------------------------------------------------------------------------------------- decompression
@pytest.mark.parametrize(
    "family, stock_class, tied",
    [
        ("llama", "LlamaForCausalLM", True),
        ("bert", "BertForMaskedLM", True),
        ("gemma3_text", "Gemma3ForCausalLM", True),
        ("qwen2", "Qwen2ForCausalLM", False),
    ],
)
def test_decompress_model(family, stock_class, tied, input_ids, tmp_path):
    model = compressed(family, freeze_codes=False)
    if family == "bert":
        with torch.no_grad():
            model.cls.predictions.bias.normal_()
    layer = model.get_input_embeddings()
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits
        weight = layer.weight.clone()
        scale = layer.embed_scale

    stock = decompress_model(model)
    assert stock is model and type(stock) is getattr(transformers, stock_class)
    assert "compressed" not in stock.config.model_type and not hasattr(stock.config, "compressed_embedding")
    embedding = stock.get_input_embeddings()
    assert isinstance(embedding, nn.Embedding) and not any(isinstance(m, CompressedEmbedding) for m in stock.modules())
    assert embedding.weight.shape == (99, 32) and torch.allclose(embedding.weight, weight, atol=1e-6)
    assert embedding.padding_idx == stock.config.pad_token_id
    if family == "gemma3_text":
        assert type(embedding).__name__ == "Gemma3TextScaledWordEmbedding"
        assert float(embedding.embed_scale) == pytest.approx(scale)
    else:
        assert type(embedding) is nn.Embedding
    head = stock.get_output_embeddings()
    assert isinstance(head, nn.Linear) and not isinstance(head, CompressedOutputHead)
    assert (head.weight is embedding.weight) is tied
    if family == "bert":
        assert stock.cls.predictions.decoder.bias is stock.cls.predictions.bias
    with torch.no_grad():
        stock_logits = stock(input_ids=input_ids).logits
    assert torch.allclose(stock_logits, logits, atol=1e-5)

    stock.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not files & {"modeling.py", "layer.py", "configuration.py"}
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == family and "compressed_embedding" not in saved and "auto_map" not in saved
    reloaded, info = getattr(transformers, stock_class).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"] and not info["unexpected_keys"], info
    assert type(reloaded) is getattr(transformers, stock_class)
    assert (reloaded.get_output_embeddings().weight is reloaded.get_input_embeddings().weight) is tied
    auto = loader(family).from_pretrained(tmp_path)
    assert type(auto) is getattr(transformers, stock_class)
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=input_ids).logits, logits, atol=1e-5)
        assert torch.allclose(auto(input_ids=input_ids).logits, logits, atol=1e-5)


def test_decompressed_checkpoint_loads_without_the_package(input_ids, tmp_path):
    model = decompress_model(compressed("gemma3_text"))
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits
    model.save_pretrained(tmp_path / "stock")
    torch.save({"input_ids": input_ids, "logits": logits}, tmp_path / "reference.pt")
    code = """
import sys, torch, transformers
folder, reference = sys.argv[1], torch.load(sys.argv[2])
model = transformers.AutoModelForCausalLM.from_pretrained(folder)
assert type(model).__name__ == "Gemma3ForCausalLM", type(model)
assert model.lm_head.weight is model.model.embed_tokens.weight
assert "compressed_embeddings" not in sys.modules
with torch.no_grad():
    diff = (model(input_ids=reference["input_ids"]).logits - reference["logits"]).abs().max().item()
assert diff < 1e-5, diff
print("OK", diff)
"""
    result = run_python(code, str(tmp_path / "stock"), str(tmp_path / "reference.pt"))
    assert result.stdout.startswith("OK")


def test_decompressed_model_trains_like_stock(input_ids):
    model = decompress_model(compressed("llama")).train()
    lm_loss(model, input_ids).backward()
    embedding = model.get_input_embeddings()
    assert embedding.weight.requires_grad and embedding.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="not a compressed model"):
        decompress_model(model)


def test_input_only_bert_keeps_its_output_bias_through_save_and_reload(tmp_path, input_ids):
    """`compress_output_head=False` unties the head; its trained bias must survive a save/reload."""
    from transformers import AutoModelForMaskedLM

    model = tiny_model("bert")
    with torch.no_grad():
        model.cls.predictions.bias.normal_()
    model = compress_model(
        model, CompressedEmbeddingConfig(method="svd", code_dim=8, compress_output_head=False), show_progress=False
    )
    assert model.cls.predictions.decoder.weight is not model.get_input_embeddings().weight
    with torch.no_grad():
        expected = model(input_ids=input_ids).logits
    model.save_pretrained(tmp_path / "input-only")
    loaded, info = AutoModelForMaskedLM.from_pretrained(tmp_path / "input-only", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad():
        assert torch.equal(loaded.eval()(input_ids=input_ids).logits, expected)
