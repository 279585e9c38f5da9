"""Transform coding (`method="transform_coding"`): packed codes, bit allocation, Lloyd-Max codebooks, calibration."""

import copy
import itertools
import os

import pytest
import torch
from conftest import tiny_model
from safetensors.torch import save_file
from tiny_tokenizers import gpt2_tokenizer

from compressed_embeddings import (
    CalibrationStats,
    CompressedEmbeddingConfig,
    CompressedEmbeddingConfigError,
    collect_calibration,
    compress_embedding,
    compress_model,
)
from compressed_embeddings.calibration import _first_tokens
from compressed_embeddings.methods.transform_coding import (
    _GAUSSIAN_DISTORTION,
    _GRID_DISTORTION,
    allocate_bits,
    lloyd_max,
    tier_sizes_for,
)
from compressed_embeddings.packed_codes import PackedCodes, pack, row_bytes, unpack


def _anisotropic_matrix(rows: int = 400, dim: int = 24, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -1.5, dim)
    return torch.randn(rows, dim, generator=generator) * scales + 0.1


@pytest.mark.parametrize("widths", [[8, 5, 3, 3, 1, 0], [2] * 9, [0, 0, 0], [7, 6, 6, 6, 6, 6, 6, 6, 6, 1]])
def test_pack_unpack_round_trip(widths):
    generator = torch.Generator().manual_seed(len(widths))
    limits = torch.tensor([2**b for b in widths])
    values = (torch.rand(37, len(widths), generator=generator) * limits).long()
    packed = pack(values, widths)
    assert packed.dtype == torch.uint8 and packed.shape == (37, row_bytes(widths))
    assert row_bytes(widths) == sum((sum(b > j for b in widths) + 7) // 8 for j in range(max(widths)))
    assert torch.equal(unpack(packed, widths), values)


def test_packed_codes_decode_through_their_tier_codebook():
    codes = PackedCodes([[3, 1], [2, 0]], [2, 3])
    values = torch.tensor([[5, 1], [0, 0], [7, 0], [3, 0], [1, 0]])
    tiers = torch.tensor([0, 1, 0, 1, 1])
    books = [torch.arange(10.0), torch.arange(5.0) * -1]  # tier 0: 8 + 2 entries; tier 1: 4 + 1
    codes.set_codes(values, tiers, books)
    expected = torch.tensor([[5.0, 9.0], [-0.0, -4.0], [7.0, 8.0], [-3.0, -4.0], [-1.0, -4.0]])
    assert torch.equal(codes.lookup(torch.arange(5)), expected)
    assert torch.equal(codes.lookup(torch.tensor([[4, 0]])), expected[[4, 0]].unsqueeze(0))
    with pytest.raises(ValueError, match="does not fit"):
        codes.set_codes(values + 4, tiers, books)
    with pytest.raises(ValueError, match="tier sizes"):
        codes.set_codes(values, torch.tensor([0, 0, 0, 1, 1]), books)


def test_allocation_is_optimal_and_non_increasing():
    table = torch.tensor(_GRID_DISTORTION, dtype=torch.float64)
    variances = torch.tensor([9.0, 4.0, 1.0, 0.2])
    for total in range(0, 12):
        (bits,) = allocate_bits(variances, total, max_bits=4)
        assert sum(bits) == total and bits == sorted(bits, reverse=True)
        best = min(
            (variances * table[list(c)]).sum().item() for c in itertools.product(range(5), repeat=4) if sum(c) == total
        )
        assert (variances * table[bits]).sum().item() == pytest.approx(best)


def test_allocation_across_tiers_follows_the_weights_and_fits_the_budget():
    variances = torch.tensor([[4.0, 1.0, 0.5], [4.0, 1.0, 0.5], [8.0, 2.0, 1.0]])
    sizes, weights = [10, 30, 100], [0.5, 0.3, 0.2]  # the heavy tier is small: its bits are cheap
    budget = 1500
    bits = allocate_bits(variances, budget, sizes, weights, codebook_bits=2)
    used = sum(n * sum(w) + 2 * sum(2**b - 1 for b in w) for n, w in zip(sizes, bits))
    assert budget - 10 < used <= budget  # no step that still fits was left out
    assert sum(bits[0]) > sum(bits[1]) > sum(bits[2]) > 0
    without_codebooks = allocate_bits(variances, budget, sizes, weights)
    assert sum(without_codebooks[0]) > sum(bits[0])  # codebook growth is paid for
    assert all(w == sorted(w, reverse=True) for w in bits)


def test_tiers_double_in_size():
    assert tier_sizes_for(49152, 128) == [128, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 16384]
    assert tier_sizes_for(600, 50) == [50, 50, 100, 200, 200]
    assert tier_sizes_for(600, 0) == tier_sizes_for(600, 600) == [600]


def test_lloyd_max_assigns_every_value_to_its_nearest_centroid():
    values = torch.randn(5000, generator=torch.Generator().manual_seed(0)) ** 3
    centroids, index = lloyd_max(values, 8, torch.Generator().manual_seed(1))
    assert torch.all(centroids[1:] > centroids[:-1])
    nearest = (values[:, None] - centroids[None]).abs().argmin(1)
    assert torch.equal(centroids[index], centroids[nearest])
    # on a unit Gaussian it reaches the distortion of the optimal (Lloyd-Max) 3-bit quantiser
    gaussian = torch.randn(200_000, generator=torch.Generator().manual_seed(2))
    centroids, index = lloyd_max(gaussian, 8, torch.Generator().manual_seed(3))
    distortion = (gaussian - centroids[index]).pow(2).mean().item()
    assert distortion == pytest.approx(_GAUSSIAN_DISTORTION[3], rel=0.05)


@pytest.mark.parametrize(("ratio", "decoder_dtype"), [(4.0, None), (6.0, None), (6.0, "int8")])
def test_byte_accounting_equals_the_serialised_size(tmp_path, ratio, decoder_dtype):
    matrix = _anisotropic_matrix(rows=3000, dim=16)
    config = CompressedEmbeddingConfig(method="transform_coding", compression_ratio=ratio, decoder_dtype=decoder_dtype)
    layer, report = compress_embedding(matrix, config, show_progress=False)
    state = {name: tensor.contiguous() for name, tensor in layer.state_dict().items()}
    save_file(state, tmp_path / "layer.safetensors")
    header = int.from_bytes((tmp_path / "layer.safetensors").read_bytes()[:8], "little")
    assert os.path.getsize(tmp_path / "layer.safetensors") - 8 - header == report.stored_bytes
    assert report.bytes_ratio_vs_fp32 >= ratio
    budget = matrix.numel() * 4 / ratio
    assert report.stored_bytes > budget - matrix.shape[0]  # the budget is used to within one byte per row
    assert report.config.code_bits is not None and report.config.tier_sizes == [3000]


def test_more_bytes_give_a_smaller_error():
    matrix = _anisotropic_matrix(rows=3000, dim=16)
    errors = [
        compress_embedding(
            matrix, CompressedEmbeddingConfig(method="transform_coding", compression_ratio=ratio), show_progress=False
        )[1].relative_frobenius_error
        for ratio in (8.0, 4.0, 2.0)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05


def _calibration(matrix: torch.Tensor, weights: torch.Tensor) -> CalibrationStats:
    counts = (100_000 / torch.arange(1, matrix.shape[0] + 1)).long()  # Zipf: row 0 is the most frequent
    return CalibrationStats(counts, torch.diag(weights).double(), 1000)


def test_calibration_moves_the_error_out_of_the_directions_the_head_uses():
    matrix = _anisotropic_matrix(rows=3000, dim=16)
    weights = torch.ones(16)
    weights[[3, 9]] = 200.0  # the head reads these two hidden dimensions
    head_error = {}
    for calibrated in (False, True):
        config = CompressedEmbeddingConfig(
            method="transform_coding", compression_ratio=4.0, first_tier_rows=0, tied_output_head=True
        )
        layer, _ = compress_embedding(
            matrix, config, show_progress=False, calibration=_calibration(matrix, weights) if calibrated else None
        )
        delta = layer.weight.detach() - matrix
        head_error[calibrated] = ((delta**2) * weights).sum().item()
    assert head_error[True] < 0.5 * head_error[False]


def test_important_rows_get_the_first_tiers_and_a_smaller_error():
    matrix = _anisotropic_matrix(rows=3000, dim=16)
    config = CompressedEmbeddingConfig(method="transform_coding", compression_ratio=5.0, first_tier_rows=300)
    layer, report = compress_embedding(
        matrix, config, show_progress=False, calibration=_calibration(matrix, torch.ones(16))
    )
    assert report.config.tier_sizes == tier_sizes_for(3000, 300) == [300, 300, 600, 1800]
    mean_bits = [sum(widths) for widths in report.config.code_bits]
    assert mean_bits == sorted(mean_bits, reverse=True) and mean_bits[0] > mean_bits[-1]
    error = (layer.weight.detach() - matrix).norm(dim=1)
    assert error[:300].mean() < 0.5 * error[1200:].mean()
    assert torch.equal(layer.packed.row_tiers[:300], torch.zeros(300, dtype=torch.uint8))


def test_predicted_probability_weighs_rows_as_well_as_input_frequency():
    matrix = _anisotropic_matrix(rows=3000, dim=16)
    counts = torch.zeros(3000, dtype=torch.int64)
    counts[:300] = 10  # frequent as inputs
    probability = torch.zeros(3000, dtype=torch.float64)
    probability[-300:] = 1 / 300  # likely as outputs
    calibration = CalibrationStats(counts, torch.eye(16, dtype=torch.float64), 10, probability)
    first_tier = {}
    for input_weight in (0.0, 100.0):
        config = CompressedEmbeddingConfig(
            method="transform_coding", compression_ratio=5.0, first_tier_rows=300, input_weight=input_weight
        )
        layer, _ = compress_embedding(matrix, config, show_progress=False, calibration=calibration)
        first_tier[input_weight] = set((layer.packed.row_tiers == 0).nonzero().flatten().tolist())
    assert first_tier[0.0] == set(range(2700, 3000))
    assert first_tier[100.0] == set(range(300))


def test_compressed_model_round_trips_and_keeps_the_head_tied(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_model("llama", "LlamaForCausalLM", vocab_size=600, hidden_size=16, tie_word_embeddings=True).eval()
    input_ids = torch.randint(0, 600, (2, 9), generator=torch.Generator().manual_seed(0))
    config = CompressedEmbeddingConfig.preset("transform_coding", compression_ratio=2.5, first_tier_rows=50)
    calibration = CalibrationStats(torch.arange(600, 0, -1), torch.eye(16, dtype=torch.float64), 1)
    model = compress_model(model, config, show_progress=False, calibration=calibration)
    head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    assert head.embedding is embedding
    decoded = embedding.weight.detach()
    with torch.no_grad():
        logits = model(input_ids).logits  # the runtime layout: int8 / int4 kernels, bf16 activations
        hidden = model.model(input_ids).last_hidden_state
        expected = hidden @ decoded.T
        assert torch.allclose(logits, expected, atol=0.01 * expected.abs().max().item())
        head.embedding.runtime_mode = "exact"
        assert torch.allclose(model(input_ids).logits, expected, atol=1e-5)
        head.embedding.runtime_mode = "kernels"
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():  # equal up to float summation order (the reloaded tensors sit elsewhere in memory)
        torch.testing.assert_close(loaded(input_ids).logits, logits, rtol=0, atol=1e-6)
    assert loaded.config.compressed_embedding["tier_sizes"] == [50, 50, 100, 200, 200]
    with pytest.raises(ValueError, match="cannot be replaced by float codes or resized"):
        loaded.resize_token_embeddings(700)
    assert loaded.get_input_embeddings().num_embeddings == 600


def test_bad_configurations_say_what_to_change():
    with pytest.raises(CompressedEmbeddingConfigError, match="codes_dtype"):
        CompressedEmbeddingConfig(method="svd", codes_dtype="packed")
    with pytest.raises(CompressedEmbeddingConfigError, match="code_dim.*sized by compression_ratio"):
        CompressedEmbeddingConfig(method="transform_coding", code_dim=4)
    with pytest.raises(CompressedEmbeddingConfigError, match="leave code_dim"):
        CompressedEmbeddingConfig(method="transform_coding", code_dim=4, compression_ratio=4).resolved(
            num_embeddings=50, embedding_dim=8
        )
    with pytest.raises(CompressedEmbeddingConfigError, match="freeze_codes"):
        CompressedEmbeddingConfig(method="transform_coding", freeze_codes=False)
    with pytest.raises(CompressedEmbeddingConfigError, match="input_weight"):
        CompressedEmbeddingConfig(method="transform_coding", input_weight=-1.0)
    with pytest.raises(CompressedEmbeddingConfigError, match="first_tier_rows"):
        CompressedEmbeddingConfig(method="transform_coding", first_tier_rows=2.5)
    with pytest.raises(ValueError, match="out of reach"):
        compress_embedding(
            torch.randn(50, 16), CompressedEmbeddingConfig(method="transform_coding", compression_ratio=50)
        )
    calibration = CalibrationStats(torch.ones(50, dtype=torch.int64), None, 0)
    with pytest.raises(ValueError, match="does not use calibration"):
        compress_embedding(
            torch.randn(50, 16), CompressedEmbeddingConfig(method="svd", code_dim=4), calibration=calibration
        )


def test_collect_calibration_counts_tokens_and_averages_the_head_inputs():
    model = tiny_model("llama", "LlamaForCausalLM").eval()
    tokenizer = gpt2_tokenizer()
    texts = [" ".join(f"w{4 + (i * 7 + j) % 90}" for j in range(40)) for i in range(5)]
    stats = collect_calibration(model, tokenizer, texts, max_tokens=150, max_length=64, show_progress=False)
    assert stats.token_counts.sum().item() == 200 and stats.token_counts[4 + 7 % 90].item() >= 1
    assert stats.num_tokens == 150
    moment = stats.output_second_moment
    assert torch.allclose(moment, moment.T) and torch.linalg.eigvalsh(moment).min() > -1e-9
    ids = _first_tokens(tokenizer, texts, 150)  # the documents in the seeded order calibration uses
    windows = [torch.tensor([ids[start : start + 64]]) for start in range(0, 150, 64)]
    with torch.no_grad():
        hidden = torch.cat([model.model(w).last_hidden_state[0] for w in windows]).double()
        probability = torch.cat([model(w).logits[0].softmax(-1) for w in windows]).double().mean(0)
    assert torch.allclose(moment, hidden.T @ hidden / 150, rtol=1e-4, atol=1e-6)
    assert stats.output_probability.shape == (model.config.vocab_size,)
    assert torch.allclose(stats.output_probability, probability, atol=1e-6)
    assert stats.output_probability.sum().item() == pytest.approx(1.0)


@pytest.mark.real
def test_calibrated_transform_coding_keeps_smollm2_perplexity_at_ratio_10():
    """The preset on SmolLM2's real tied embedding, calibrated on a slice of the calibration split, scored on the
    validation split (the quality benchmark reports the test split)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from compressed_embeddings.assets import smollm2_path, text_splits
    from compressed_embeddings.evaluation import perplexity

    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    splits = text_splits("brown")
    texts = splits["validation"]
    original = perplexity(model, tokenizer, texts, max_tokens=1024, show_progress=False).perplexity
    calibration = collect_calibration(model, tokenizer, splits["calibration"], max_tokens=4096, show_progress=False)
    config = CompressedEmbeddingConfig.preset("transform_coding", compression_ratio=10)
    model = compress_model(model, config, show_progress=False, calibration=calibration)
    report = model.compression_report
    compressed = perplexity(model, tokenizer, texts, max_tokens=1024, show_progress=False).perplexity
    assert report.bytes_ratio_vs_fp32 >= 10
    assert report.config.tier_sizes == tier_sizes_for(49152, 128)
    assert compressed / original < 1.15, (original, compressed)
    print(
        f"\nSmolLM2 transform coding CR {report.bytes_ratio_vs_fp32:.2f}: "
        f"perplexity {original:.2f} -> {compressed:.2f}"
    )


def test_masked_lm_head_with_a_bias_over_packed_codes(tmp_path):
    """BERT's tied head carries its own bias: it is built (and saved) beside packed codes too."""
    from transformers import AutoModelForMaskedLM

    model = tiny_model("bert", vocab_size=600, hidden_size=16, hidden_dropout_prob=0.0).eval()
    input_ids = torch.randint(0, 600, (2, 9), generator=torch.Generator().manual_seed(0))
    config = CompressedEmbeddingConfig.preset("transform_coding", compression_ratio=2.5)
    model = compress_model(model, config, show_progress=False)
    head = model.get_output_embeddings()
    assert head.embedding is model.get_input_embeddings() and head.bias.shape == (600,)
    with torch.no_grad():
        logits = model(input_ids).logits
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()(input_ids).logits
        torch.testing.assert_close(reloaded, logits, rtol=0, atol=1e-6)


def test_without_text_a_tied_head_is_calibrated_on_the_models_own_text():
    from compressed_embeddings import random_token_calibration
    from compressed_embeddings.calibration import CALIBRATION_TOKENS, self_generated_calibration

    model = tiny_model("llama", "LlamaForCausalLM", vocab_size=600, hidden_size=16, tie_word_embeddings=True).eval()
    stats = random_token_calibration(model, num_tokens=300, max_length=128)
    assert stats.num_tokens == 300 and stats.output_probability is None and not stats.token_counts.any()
    moment = stats.output_second_moment
    assert moment.shape == (16, 16) and torch.allclose(moment, moment.T)
    assert torch.linalg.eigvalsh(moment).min() > -1e-9 and moment.trace() > 0
    config = CompressedEmbeddingConfig.preset("transform_coding", compression_ratio=2.5)
    implicit = compress_model(copy.deepcopy(model), config, show_progress=False, calibration=None)
    own_text = self_generated_calibration(model, num_tokens=CALIBRATION_TOKENS, show_progress=False)
    assert own_text.token_counts.any() and own_text.output_inputs is not None  # counts and states to fit on
    explicit = compress_model(copy.deepcopy(model), config, show_progress=False, calibration=own_text)
    for name, tensor in implicit.get_input_embeddings().state_dict().items():
        assert torch.equal(tensor, explicit.get_input_embeddings().state_dict()[name]), name
    euclidean, _ = compress_embedding(model.get_input_embeddings().weight, config, show_progress=False)
    assert not torch.equal(euclidean.decoder.weight, implicit.get_input_embeddings().decoder.weight)


def _head_kl(matrix: torch.Tensor, decoded: torch.Tensor, hidden: torch.Tensor) -> float:
    teacher, student = (hidden @ matrix.T).log_softmax(-1), (hidden @ decoded.T).log_softmax(-1)
    return (teacher.exp() * (teacher - student)).sum(-1).mean().item()


@pytest.mark.parametrize("decoder_dtype", [None, "int8"])
def test_fitting_to_the_logits_lowers_the_heads_kl_divergence(decoder_dtype):
    matrix = _anisotropic_matrix(rows=2000, dim=16)
    generator = torch.Generator().manual_seed(5)
    hidden = torch.randn(3000, 16, generator=generator) * torch.linspace(2.0, 0.2, 16)
    moment = (hidden.T @ hidden / 3000).double()
    counts = (10_000 / torch.arange(1, 2001)).long()
    calibration = CalibrationStats(counts, moment, 3000, None, hidden[:2000])
    kl = {}
    for steps in (0, 100):
        config = CompressedEmbeddingConfig(
            method="transform_coding", compression_ratio=6.0, tied_output_head=True, kl_steps=steps,
            decoder_dtype=decoder_dtype,
        )  # fmt: skip
        layer, report = compress_embedding(matrix, config, show_progress=False, calibration=calibration)
        kl[steps] = _head_kl(matrix, layer.weight.detach(), hidden[2000:])  # held-out states
        assert len(report.loss_history) == 1 + steps
    assert kl[100] < 0.92 * kl[0], kl


def test_fitting_to_the_logits_needs_an_output_head_reading_the_codes(caplog):
    from transformers.utils import logging

    matrix = _anisotropic_matrix(rows=500, dim=16)
    calibration = CalibrationStats(
        torch.ones(500, dtype=torch.int64), torch.eye(16).double(), 9, None, torch.ones(9, 16)
    )
    config = CompressedEmbeddingConfig(method="transform_coding", compression_ratio=4.0, kl_steps=5)
    logging.enable_propagation()
    try:
        with caplog.at_level("INFO"):
            _, report = compress_embedding(matrix, config, show_progress=False, calibration=calibration)
    finally:
        logging.disable_propagation()
    assert "no output head reads these codes" in caplog.text and len(report.loss_history) == 1
    _, report = compress_embedding(matrix, config, show_progress=False)  # no hidden states: nothing to fit to
    assert len(report.loss_history) == 1
