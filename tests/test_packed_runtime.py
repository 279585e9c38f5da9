"""The runtime layout of packed codes: a tied head's logits from int8 / int4 matrices, never a float V x d matrix."""

import json

import pytest
import torch
from conftest import TINY_FAMILIES, load_in_fresh_process, tiny_model
from safetensors.torch import save_file

from compressed_embeddings import CompressedEmbedding, CompressedEmbeddingConfig, compress_embedding, compress_model
from compressed_embeddings.packed_runtime import (
    PackedRuntime,
    _pack_int4,
    _unpack_int4_rows,
    grid_of,
    kernels_available,
)

TIED = [family for family, (_, kwargs, _, _) in TINY_FAMILIES.items() if kwargs.get("tie_word_embeddings", True)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Kernels round the activations and their products to bf16; exact mode multiplies in the model's dtype.
TOLERANCE = {("kernels", "float32"): 1e-2, ("exact", "float32"): 1e-5, "bfloat16": 3e-2, "float16": 2e-2}


def _anisotropic(rows: int, dim: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, generator=generator) * torch.logspace(0, -3, dim) + 0.1


def _compressed(family: str, dtype: torch.dtype, ratio: float = 2.5):
    model = tiny_model(family).to(dtype)
    config = CompressedEmbeddingConfig.preset("transform_coding", compression_ratio=ratio)
    return compress_model(model, config, show_progress=False).eval()


def _decoded_logits(head, hidden: torch.Tensor) -> torch.Tensor:
    """The reference: hidden states times the fully decoded matrix, in float32."""
    logits = hidden.float() @ head.embedding.weight.float().T
    return logits if head.bias is None else logits + head.bias.float()


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("family", TIED)
def test_runtime_logits_match_the_decoded_head(family, dtype):
    model = _compressed(family, DTYPES[dtype])
    head = model.get_output_embeddings()
    hidden = torch.randn(2, 5, head.in_features, generator=torch.Generator().manual_seed(0)).to(DTYPES[dtype])
    expected = _decoded_logits(head, hidden)
    for mode in ("kernels", "exact"):
        head.embedding.runtime_mode = mode
        with torch.no_grad():
            logits = head(hidden)
        assert logits.dtype == DTYPES[dtype]
        tolerance = TOLERANCE.get((mode, dtype), TOLERANCE.get(dtype))
        torch.testing.assert_close(logits.float(), expected, rtol=0, atol=tolerance * expected.abs().max().item())
    assert head.embedding.packed_runtime() is not None


def test_both_integer_widths_and_constant_columns_are_exercised():
    matrix = _anisotropic(1000, 128)
    config = CompressedEmbeddingConfig.preset("transform_coding", compression_ratio=6.0, tied_output_head=True)
    layer, report = compress_embedding(matrix, config, show_progress=False)
    bits = report.config.code_bits[0]
    assert max(bits) >= 4 and 1 <= min(b for b in bits if b) <= 3 and 0 in bits, bits
    runtime = layer.packed_runtime()
    tier = runtime.tiers[0]
    if kernels_available(torch.device("cpu")):
        assert tier.wide is not None and tier.blocks
        assert tier.wide_columns % 16 == 0 and all(block.columns % block.group == 0 for block in tier.blocks)
    p = torch.randn(3, 128, generator=torch.Generator().manual_seed(1))
    expected = p @ layer.dense_codes().T
    exact = PackedRuntime(layer.packed, mode="exact")
    torch.testing.assert_close(exact.logits(p), expected, rtol=0, atol=1e-5 * expected.abs().max().item())
    torch.testing.assert_close(runtime.logits(p), expected, rtol=0, atol=1e-2 * expected.abs().max().item())
    many = torch.randn(40, 128, generator=torch.Generator().manual_seed(2))  # past the kernels: expanded chunks, bf16
    expected = many @ layer.dense_codes().T
    torch.testing.assert_close(runtime.logits(many), expected, rtol=0, atol=1e-2 * expected.abs().max().item())
    # one byte per entry of 4 bits or more, half a byte per narrower one (rows padded to 64, columns to a group)
    assert tier.wide.numel() == 1000 * tier.wide_columns
    assert all(block.packed.numel() == 1024 * block.columns // 2 for block in tier.blocks)
    ids = torch.tensor([[5, 999], [0, 64]])
    torch.testing.assert_close(runtime.lookup(ids), layer.dense_codes()[ids])
    assert report.runtime_bytes == report.stored_bytes + runtime.nbytes()


def test_int4_packing_is_the_kernel_layout_and_unpacks_row_by_row():
    values = torch.randint(0, 16, (192, 96), generator=torch.Generator().manual_seed(2))
    packed = _pack_int4(values)
    if kernels_available(torch.device("cpu")):
        assert torch.equal(packed, torch._convert_weight_to_int4pack_for_cpu(values.int(), 1))
    rows = torch.tensor([0, 31, 32, 63, 64, 100, 191])
    assert torch.equal(_unpack_int4_rows(packed, rows), values[rows])


def test_codebooks_read_back_as_grids_and_others_are_refused():
    lo, step, levels = grid_of(torch.tensor([0.5, 0.5 + 3 * 0.1, 0.5 + 15 * 0.1, 0.5 + 6 * 0.1, -2.0]), [2, 0])
    assert levels.tolist() == [0, 3, 15, 6, 0] and torch.allclose(step, torch.tensor([0.1, 0.0]))
    assert lo.tolist() == [0.5, -2.0]
    with pytest.raises(ValueError, match="not on a grid"):
        grid_of(torch.tensor([0.0, 0.123, 0.5, 1.0]), [2])


def test_codebooks_off_their_grids_run_chunk_by_chunk(caplog):
    """Codebooks of checkpoints written before the grids (free Lloyd-Max values): the head decodes the rows in
    chunks, exactly, and says how to get the runtime layout."""
    from transformers.utils import logging

    model = _compressed("llama", torch.float32)
    layer, head = model.get_input_embeddings(), model.get_output_embeddings()
    with torch.no_grad():
        book = layer.packed.codebooks[0]
        book.add_(torch.rand(book.shape, generator=torch.Generator().manual_seed(0)) * 0.01 * book.abs().max())
    hidden = torch.randn(1, 3, 32)
    logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"), torch.no_grad():
            logits = head(hidden)
    finally:
        logging.disable_propagation()
    assert layer.packed_runtime() is None and "not on the grids" in caplog.text
    expected = _decoded_logits(head, hidden)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5 * expected.abs().max().item())


def test_inference_never_decodes_the_whole_matrix(monkeypatch):
    model = _compressed("llama", torch.bfloat16)
    ids = torch.randint(0, 99, (1, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(ids).logits

    def refuse(self):
        raise AssertionError("decoded every row in inference")

    monkeypatch.setattr(CompressedEmbedding, "dense_codes", refuse)
    monkeypatch.setattr(CompressedEmbedding, "weight", property(refuse))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, expected)
        model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)


def test_training_uses_the_differentiable_path():
    model = _compressed("llama", torch.float32)
    layer = model.get_input_embeddings()
    ids = torch.randint(0, 99, (2, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        inference = model(ids).logits
    model.train()
    logits = model(ids).logits
    torch.testing.assert_close(logits.detach(), inference, rtol=0, atol=1e-2 * inference.abs().max().item())
    logits.square().mean().backward()
    assert layer.decoder.scales.grad is not None and layer.decoder.scales.grad.abs().sum() > 0
    assert all(p.grad is None for p in layer.packed.parameters())  # integer codes and codebooks stay frozen
    # codebooks a user unfreezes get gradients through the same path
    model.zero_grad()
    layer.packed.codebooks[0].requires_grad_(True)
    model(ids).logits.square().mean().backward()
    assert layer.packed.codebooks[0].grad is not None and layer.packed.codebooks[0].grad.abs().sum() > 0


def test_runtime_is_rebuilt_when_the_codes_change_or_move():
    model = _compressed("llama", torch.float32)
    layer = model.get_input_embeddings()
    first = layer.packed_runtime()
    assert layer.packed_runtime() is first
    with torch.no_grad():
        layer.packed.codebooks[0].mul_(2.0)  # still on its grids, twice as wide
    second = layer.packed_runtime()
    assert second is not first
    torch.testing.assert_close(second.tiers[0].step, 2 * first.tiers[0].step)
    model.to(torch.bfloat16)
    assert layer.packed_runtime() is not second


@pytest.fixture(scope="module")
def saved_runtime_checkpoints(tmp_path_factory):
    """Transform-coded tied models of every tied family, in fp32 and bf16, saved with reference logits."""
    root = tmp_path_factory.mktemp("runtime")
    ids = torch.randint(1, 99, (2, 9), generator=torch.Generator().manual_seed(1))
    manifest = []
    for family in TIED:
        for dtype in ("float32", "bfloat16"):
            model = _compressed(family, DTYPES[dtype])
            with torch.no_grad():
                logits = model(input_ids=ids).logits
            path = root / f"{family}-{dtype}"
            model.save_pretrained(path)
            save_file({"input_ids": ids, "logits": logits.float()}, str(path) + ".ref.safetensors")
            saved = "AutoModelForMaskedLM" if family in ("bert", "roberta", "distilbert") else "AutoModelForCausalLM"
            entry = {"family": family, "path": str(path), "reference": str(path) + ".ref.safetensors"}
            manifest.append({**entry, "auto_classes": [saved], "saved_auto_class": saved, "dtype": "auto"})
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root / "manifest.json", manifest


@pytest.mark.parametrize("mode", ["import", "remote"])
def test_reload_by_both_paths_keeps_the_runtime_layout(saved_runtime_checkpoints, mode):
    manifest_path, manifest = saved_runtime_checkpoints
    results = load_in_fresh_process(manifest_path, mode)[:-1]
    assert len(results) == len(manifest)
    for row, entry in zip(results, manifest):
        dtype = entry["path"].rsplit("-", 1)[1]
        assert row["dtype"] == dtype and row["float_dtypes"] == [f"torch.{dtype}"], row
        assert row["runtime"] is not None and row["runtime"]["kernels"] == kernels_available(torch.device("cpu"))
        expected_module = "transformers_modules." if mode == "remote" else "compressed_embeddings.packed_runtime"
        assert row["runtime_module"].startswith(expected_module), row
        # equal up to summation order (reloaded tensors sit elsewhere in memory): float rounding of the dtype
        assert row["max_abs_diff"] <= (1e-5 if dtype == "float32" else 2e-2) * row["reference_scale"], row


def test_loading_builds_the_runtime_layout_from_the_file(tmp_path):
    """`from_pretrained` builds the layout from the checkpoint file, apart from the model's memory map (so the planes
    are never paged in), with the same integers as a layout built from the loaded planes."""
    from transformers import AutoModelForCausalLM

    _compressed("llama", torch.bfloat16).save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype="auto")
    layer = loaded.get_input_embeddings()
    assert "_runtime" in layer.__dict__  # built during loading
    from_file = layer.packed_runtime()
    from_planes = PackedRuntime(layer.packed)
    for a, b in zip(from_file.tiers, from_planes.tiers):
        assert torch.equal(a.wide, b.wide) if a.wide is not None else b.wide is None
        assert all(torch.equal(x.packed, y.packed) for x, y in zip(a.blocks, b.blocks))
