"""Compressed models on a CUDA GPU in float16 and bfloat16: forward, generate, a training step, save/reload.

Marked `gpu` and skipped where `torch.cuda.is_available()` is false (CI, the CPU machines); run it where a GPU is:

    python -m pytest tests/test_gpu.py -m gpu -v

Tiny random models of several families (conftest.py) are compressed by SVD and by the paper's autoencoder (two
epochs: the numbers here check numerics, not training), with a linear decoder (a tied head then computes its logits
in code space, `(h W) C^T + h.b`) and a non-linear one (the head decodes the matrix), then moved to the GPU in half
precision. Each half-precision result is compared with the float32 result on the CPU, relative to the logits' scale.

`COMPRESSED_EMBEDDINGS_TEST_DEVICE=cpu` runs the same checks on the CPU (to work on this file without a GPU).
"""

import copy
import os

import pytest
import torch
import transformers
from conftest import tiny_model

from compressed_embeddings import CompressedEmbedding, CompressedEmbeddingConfig, CompressedOutputHead, compress_model
from compressed_embeddings.packed_runtime import kernels_available

DEVICE = os.environ.get("COMPRESSED_EMBEDDINGS_TEST_DEVICE", "cuda")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE == "cuda" and not torch.cuda.is_available(),
        reason="needs a CUDA GPU (torch.cuda.is_available() is False)",
    ),
]

#: family -> Auto class that reloads its saved checkpoint; llama and gpt2 have tied heads, qwen2 an untied one,
#: bert a tied masked-LM head with a bias.
FAMILIES = {
    "llama": transformers.AutoModelForCausalLM,
    "gpt2": transformers.AutoModelForCausalLM,
    "qwen2": transformers.AutoModelForCausalLM,
    "bert": transformers.AutoModelForMaskedLM,
}
NO_DROPOUT = {"bert": dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)}
VARIANTS = {
    "svd": dict(method="svd", code_dim=8),
    "ae-linear": dict(method="autoencoder", code_dim=8, epochs=2),
    "ae-nonlinear": dict(method="autoencoder", code_dim=8, epochs=2, decoder_hidden_dims=[16]),
}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
#: max |logits - fp32 logits| / max |fp32 logits| allowed (bf16 keeps 8 bits of mantissa, fp16 11).
RELATIVE_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-4}


def _compressed(family: str, variant: str, **config):
    model = tiny_model(family, **NO_DROPOUT.get(family, {}))
    return compress_model(model, CompressedEmbeddingConfig(**VARIANTS[variant], **config), show_progress=False).eval()


def _ids(batch: int = 2, length: int = 9) -> torch.Tensor:
    return torch.randint(3, 99, (batch, length), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def _greedy(model, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Exactly `new_tokens` greedy tokens after `prompt`."""
    return model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
        do_sample=False, pad_token_id=0,
    )  # fmt: skip


def _relative_error(logits: torch.Tensor, reference: torch.Tensor) -> float:
    return ((logits.float().cpu() - reference).abs().max() / reference.abs().max()).item()


@pytest.fixture(scope="module")
def models():
    """Every (family, variant) compressed once on the CPU in float32, with its float32 CPU logits."""
    built = {}
    ids = _ids()
    for family in FAMILIES:
        for variant in VARIANTS:
            model = _compressed(family, variant)
            with torch.no_grad():
                built[family, variant] = (model, model(input_ids=ids).logits)
    return ids, built


@pytest.mark.parametrize("dtype", list(DTYPES.values()) + [torch.float32], ids=list(DTYPES) + ["float32"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_forward_matches_fp32(models, family, variant, dtype):
    ids, built = models
    model, reference = built[family, variant]
    model = copy.deepcopy(model).to(DEVICE, dtype)
    layer, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert isinstance(layer, CompressedEmbedding)
    assert layer.codes.device.type == DEVICE and layer.codes.dtype == dtype and layer.compute_dtype == dtype
    assert isinstance(head, CompressedOutputHead) is (family != "qwen2")  # qwen2's head is untied: left alone
    assert layer.is_linear is (variant != "ae-nonlinear")
    with torch.no_grad():
        rows = layer(ids.to(DEVICE))
        logits = model(input_ids=ids.to(DEVICE)).logits
    assert rows.dtype == dtype and rows.device.type == DEVICE
    assert logits.dtype == dtype and logits.device.type == DEVICE
    assert torch.isfinite(logits).all()
    error = _relative_error(logits, reference)
    assert error <= RELATIVE_TOLERANCE[dtype], f"relative error {error:.2e} vs fp32 on CPU"
    if dtype != torch.float32:
        assert not torch.equal(logits.float().cpu(), reference)  # it really ran in low precision


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_code_space_head_matches_decoded_matrix(models, family, dtype):
    """The code-space head on the GPU gives the logits of the decoded V x d matrix, in half precision too."""
    ids, built = models
    model = copy.deepcopy(built[family, "ae-linear"][0]).to(DEVICE, dtype)
    head = model.get_output_embeddings()
    hidden = torch.randn(2, 9, model.config.hidden_size, generator=torch.Generator().manual_seed(2))
    hidden = hidden.to(DEVICE, dtype)
    with torch.no_grad():
        logits = head(hidden).float()
        dense = hidden.float() @ head.weight.float().T  # head.weight decodes the full matrix
        if getattr(head, "bias", None) is not None:
            dense = dense + head.bias.float()
    assert torch.isfinite(logits).all()
    scale = dense.abs().max()
    assert ((logits - dense).abs().max() / scale).item() <= RELATIVE_TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
def test_generate(models, family, variant, dtype):
    _, built = models
    model = copy.deepcopy(built[family, variant][0]).to(DEVICE, dtype)
    prompt = _ids(batch=2, length=5).to(DEVICE)
    output = _greedy(model, prompt, 8)
    assert output.shape == (2, 13) and output.device.type == DEVICE
    assert torch.equal(output[:, :5], prompt)
    assert ((output >= 0) & (output < 99)).all()
    # Each greedy token (chosen from the cached logits) is the best one, within the precision, of the logits a full
    # uncached forward pass over the generated sequence gives (ties in half precision may pick either).
    with torch.no_grad():
        logits = model(input_ids=output).logits[:, 4:-1].float()
    chosen = logits.gather(-1, output[:, 5:].unsqueeze(-1)).squeeze(-1)
    gap = (logits.max(-1).values - chosen).max() / logits.abs().max()
    assert gap.item() <= RELATIVE_TOLERANCE[dtype], f"a greedy token is {gap.item():.2e} below the best (relative)"


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("freeze_codes", [True, False], ids=["codes-frozen", "codes-trainable"])
@pytest.mark.parametrize("family", ["llama", "bert"])
def test_training_step(family, freeze_codes, dtype):
    """Backward and an optimiser step in half precision on the GPU: finite gradients where they belong."""
    model = _compressed(family, "ae-linear", freeze_codes=freeze_codes).to(DEVICE, dtype).train()
    layer = model.get_input_embeddings()
    ids = _ids().to(DEVICE)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert layer.decoder.weight.grad is not None and layer.decoder.weight.grad.dtype == dtype
    assert torch.isfinite(layer.decoder.weight.grad).all() and layer.decoder.weight.grad.abs().sum() > 0
    assert (layer.codes.grad is None) is freeze_codes
    before = layer.decoder.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, layer.decoder.weight.detach())


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("variant", ["svd", "ae-nonlinear"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_save_and_reload_on_gpu(models, family, variant, dtype, tmp_path):
    """save_pretrained from the GPU, from_pretrained straight onto it (device_map) and by .to(): same model."""
    ids, built = models
    model = copy.deepcopy(built[family, variant][0]).to(DEVICE, dtype)
    with torch.no_grad():
        logits = model(input_ids=ids.to(DEVICE)).logits
    model.save_pretrained(tmp_path)
    auto = FAMILIES[family]
    reloaded = {
        "device_map": auto.from_pretrained(tmp_path, dtype=dtype, device_map=DEVICE),
        "to": auto.from_pretrained(tmp_path, dtype=dtype).to(DEVICE),
    }
    saved = {name: tensor.cpu() for name, tensor in model.state_dict().items()}
    for how, loaded in reloaded.items():
        loaded.eval()
        layer = loaded.get_input_embeddings()
        assert isinstance(layer, CompressedEmbedding), how
        assert layer.codes.device.type == DEVICE and layer.codes.dtype == dtype, how
        assert isinstance(loaded.get_output_embeddings(), CompressedOutputHead) is (family != "qwen2"), how
        if family != "qwen2":
            assert loaded.get_output_embeddings().embedding is layer, how
        for name, tensor in loaded.state_dict().items():
            assert torch.equal(tensor.cpu(), saved[name]), (how, name)
        with torch.no_grad():
            again = loaded(input_ids=ids.to(DEVICE)).logits
        assert again.dtype == dtype and torch.isfinite(again).all(), how
        # Same weights; non-persistent buffers (rotary frequencies) may differ in dtype between `.to(dtype)` and
        # loading with `dtype=`, as for stock models, so the logits agree within the precision, not bit for bit.
        error = _relative_error(again, logits.float().cpu())
        assert error <= RELATIVE_TOLERANCE[dtype], f"{how}: relative error {error:.2e}"


def test_int8_codes_on_gpu(models):
    """Codes stored in int8 with per-row scales are dequantised on the fly on the GPU, in bf16."""
    ids, built = models
    reference = built["llama", "svd"][1]
    model = _compressed("llama", "svd", codes_dtype="int8").to(DEVICE, torch.bfloat16)
    layer = model.get_input_embeddings()
    assert layer.codes.dtype == torch.int8 and layer.codes.device.type == DEVICE
    with torch.no_grad():
        logits = model(input_ids=ids.to(DEVICE)).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert _relative_error(logits, reference) <= 0.1


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_transform_coding_on_gpu(family, dtype, tmp_path):
    """Packed codes (uint8 bit planes + per-column codebooks) on the GPU in half precision: lookups, the tied head
    (from the runtime layout in eval mode: int8, exact mode, where the CPU's weight-only kernels are missing), greedy
    generation, and save / reload straight onto the device."""
    from compressed_embeddings import CalibrationStats

    model = tiny_model(family, vocab_size=1000, **NO_DROPOUT.get(family, {}))
    hidden = model.config.hidden_size
    calibration = CalibrationStats(
        (10_000 / torch.arange(1, 1001)).long(), torch.eye(hidden, dtype=torch.float64), 1, torch.full((1000,), 1e-3)
    )
    config = CompressedEmbeddingConfig.preset("transform_coding", compression_ratio=3, first_tier_rows=100)
    model = compress_model(model, config, show_progress=False, calibration=calibration).eval()
    ids = torch.randint(3, 999, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(input_ids=ids).logits
    model = model.to(DEVICE, dtype)
    layer = model.get_input_embeddings()
    assert layer.codes is None and all(p.dtype == torch.uint8 and p.device.type == DEVICE for p in layer.packed.planes)
    assert layer.packed.codebooks[0].dtype == dtype
    with torch.no_grad():
        rows = layer(ids.to(DEVICE))
        logits = model(input_ids=ids.to(DEVICE)).logits
    assert rows.dtype == dtype and logits.dtype == dtype and torch.isfinite(logits).all()
    assert _relative_error(logits, reference) <= RELATIVE_TOLERANCE[dtype]
    runtime = layer.packed_runtime()
    assert runtime is not None and runtime.kernels == kernels_available(torch.device(DEVICE))
    assert all(t.wide is None or t.wide.device.type == DEVICE for t in runtime.tiers)
    if family != "bert":
        output = _greedy(model, ids[:, :5].to(DEVICE), 6)
        assert output.shape == (2, 11) and output.device.type == DEVICE
    model.save_pretrained(tmp_path)
    loaded = FAMILIES[family].from_pretrained(tmp_path, dtype=dtype, device_map=DEVICE).eval()
    saved = {name: tensor.cpu() for name, tensor in model.state_dict().items()}
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor.cpu(), saved[name]), name
    with torch.no_grad():
        again = loaded(input_ids=ids.to(DEVICE)).logits
    assert _relative_error(again, logits.float().cpu()) <= RELATIVE_TOLERANCE[dtype]
