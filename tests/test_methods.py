"""Compression methods: SVD optimality, the paper's autoencoder, losses, byte accounting, determinism."""

import pytest
import torch
from safetensors.torch import save_file

from compressed_embeddings import CompressedEmbeddingConfig, compress_embedding, direction_loss
from compressed_embeddings.losses import cosine_distance, l1_power, powered_l1


def low_rank(rows: int = 300, cols: int = 32, rank: int = 10, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(rows, rank, generator=generator) @ torch.randn(rank, cols, generator=generator)
    return matrix + noise * torch.randn(rows, cols, generator=generator)


def optimal_error(matrix: torch.Tensor, rank: int) -> float:
    singular = torch.linalg.svdvals(matrix.double())
    return float(singular[rank:].square().sum().sqrt() / singular.square().sum().sqrt())


@pytest.mark.parametrize("solver", ["exact", "randomized"])
def test_svd_at_full_rank_is_exact(solver):
    matrix = low_rank(rank=10)
    layer, report = compress_embedding(
        matrix, CompressedEmbeddingConfig(method="svd", code_dim=10, svd_solver=solver), show_progress=False
    )
    assert torch.allclose(layer.weight, matrix, atol=1e-4)
    assert report.relative_frobenius_error < 1e-5 and report.mean_cosine > 1 - 1e-6


@pytest.mark.parametrize("rank", [1, 5, 16, 31])
def test_svd_matches_the_optimal_rank_r_error(rank):
    matrix = low_rank(rank=32, noise=0.1)
    exact = compress_embedding(matrix, CompressedEmbeddingConfig(method="svd", code_dim=rank), show_progress=False)[1]
    assert exact.relative_frobenius_error == pytest.approx(optimal_error(matrix, rank), rel=1e-5, abs=1e-7)
    randomized = compress_embedding(
        matrix, CompressedEmbeddingConfig(method="svd", code_dim=rank, svd_solver="randomized"), show_progress=False
    )[1]
    assert randomized.relative_frobenius_error == pytest.approx(optimal_error(matrix, rank), rel=1e-3)


def test_centred_svd_is_never_worse_and_stores_the_mean_as_bias():
    matrix = low_rank(rank=32, noise=0.1) + 3.0  # a large common offset
    plain = compress_embedding(matrix, CompressedEmbeddingConfig(method="svd", code_dim=4), show_progress=False)
    centred = compress_embedding(
        matrix, CompressedEmbeddingConfig(method="svd", code_dim=4, decoder_bias=True), show_progress=False
    )
    assert plain[0].decoder.bias is None
    assert torch.allclose(centred[0].decoder.bias, matrix.mean(0), atol=1e-5)
    assert centred[1].relative_frobenius_error <= plain[1].relative_frobenius_error + 1e-7


def test_report_counts_every_stored_parameter_and_meets_the_ratio():
    matrix = low_rank(rows=1000, cols=64, rank=64)
    for method in ("svd", "autoencoder"):
        config = CompressedEmbeddingConfig(method=method, compression_ratio=5, epochs=1)
        layer, report = compress_embedding(matrix, config, show_progress=False)
        stored = sum(p.numel() for p in layer.parameters())
        assert report.stored_parameters == stored
        assert report.compression_ratio == pytest.approx(matrix.numel() / stored)
        assert report.compression_ratio >= 5
        bigger = config.stored_parameters(1000, 64, report.code_dim + 1)
        assert matrix.numel() / bigger < 5, "k is the largest width that meets the ratio"
        assert report.wall_time_s > 0


def test_byte_accounting_equals_the_serialised_size(tmp_path):
    matrix = low_rank(rows=500, cols=48, rank=48)
    layer, report = compress_embedding(
        matrix, CompressedEmbeddingConfig(method="autoencoder", code_dim=6, epochs=1), show_progress=False
    )
    path = tmp_path / "layer.safetensors"
    save_file({k: v.contiguous() for k, v in layer.state_dict().items()}, str(path))
    header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    assert path.stat().st_size - header == report.stored_parameters * 4


def test_autoencoder_loss_falls_and_is_deterministic():
    matrix = low_rank(rows=400, cols=32, rank=32, noise=0.5)
    config = CompressedEmbeddingConfig(method="autoencoder", code_dim=8, epochs=6, batch_size=32)
    layer_a, report_a = compress_embedding(matrix, config, show_progress=False)
    layer_b, _ = compress_embedding(matrix, config, show_progress=False)
    layer_c, _ = compress_embedding(
        matrix, CompressedEmbeddingConfig(method="autoencoder", code_dim=8, epochs=6, seed=2), show_progress=False
    )
    assert report_a.loss_history[-1] < report_a.loss_history[0]
    assert len(report_a.loss_history) == 6
    assert torch.equal(layer_a.codes, layer_b.codes), "the same seed gives bitwise-equal codes"
    assert torch.equal(layer_a.decoder.weight, layer_b.decoder.weight)
    assert not torch.equal(layer_a.codes, layer_c.codes)


def test_autoencoder_svd_init_starts_from_the_svd_solution():
    matrix = low_rank(rows=400, cols=32, rank=32, noise=0.5)
    svd = compress_embedding(
        matrix, CompressedEmbeddingConfig(method="svd", code_dim=8, decoder_bias=True), show_progress=False
    )[1]
    ae = compress_embedding(
        matrix, CompressedEmbeddingConfig(method="autoencoder", code_dim=8, init="svd", epochs=3), show_progress=False
    )[1]
    assert ae.mean_cosine >= svd.mean_cosine - 1e-4, "training on the direction loss keeps or improves the cosine"


def test_max_steps_stops_training_early():
    matrix = low_rank(rows=400, cols=32, rank=32)
    report = compress_embedding(
        matrix, CompressedEmbeddingConfig(method="autoencoder", code_dim=8, max_steps=5), show_progress=False
    )[1]
    assert len(report.loss_history) == 1


def test_nonlinear_decoder_trains_and_counts_its_parameters():
    matrix = low_rank(rows=400, cols=32, rank=32)
    config = CompressedEmbeddingConfig(method="autoencoder", code_dim=4, decoder_hidden_dims=[16], epochs=2)
    layer, report = compress_embedding(matrix, config, show_progress=False)
    assert report.stored_parameters == 400 * 4 + (4 * 16 + 16) + (16 * 32 + 32)
    assert not layer.is_linear


def test_nan_rows_are_refused_with_their_ids():
    matrix = low_rank()
    matrix[7, 3] = float("nan")
    matrix[11, 0] = float("inf")
    with pytest.raises(ValueError, match=r"2 row\(s\) with NaN or Inf.*\[7, 11\]"):
        compress_embedding(matrix, CompressedEmbeddingConfig(method="svd", code_dim=4), show_progress=False)


def test_losses():
    x = torch.randn(16, 8)
    assert float(direction_loss(x, x)) < 1e-6
    assert float(cosine_distance(3 * x, x)) < 1e-6, "direction ignores scale"
    assert float(cosine_distance(-x, x)) == pytest.approx(2.0)
    assert float(powered_l1(x + 1, x, 0.5)) == pytest.approx(1.0, rel=1e-5)
    weighted = direction_loss(-x, x, cosine_weight=0.1995, l1_weight=0.0, rmse_weight=0.0)
    assert float(weighted) == pytest.approx(0.1995 * 2)
    assert [l1_power(e) for e in (0, 10, 20, 25)] == pytest.approx([1.0, 0.55, 0.1, 0.1])


@pytest.mark.real
def test_paper_autoencoder_beats_svd_cosine_on_smollm2():
    """The paper's recipe, as published (30 epochs, batch 32), on SmolLM2's real 49,152 x 576 embedding."""
    from safetensors import safe_open

    from compressed_embeddings.assets import smollm2_path

    with safe_open(str(smollm2_path() / "model.safetensors"), "pt") as checkpoint:
        matrix = checkpoint.get_tensor("model.embed_tokens.weight")
    svd = compress_embedding(
        matrix, CompressedEmbeddingConfig.preset("svd", compression_ratio=10), show_progress=False
    )[1]
    paper = compress_embedding(
        matrix, CompressedEmbeddingConfig.preset("paper", compression_ratio=10), show_progress=False
    )[1]
    assert paper.stored_parameters <= svd.stored_parameters * 1.001  # same size (the AE adds a d-sized bias)
    assert min(paper.loss_history) < paper.loss_history[0], "the loss falls"
    assert paper.mean_cosine > svd.mean_cosine, (paper.mean_cosine, svd.mean_cosine)
    print(
        f"\nSmolLM2 CR10: SVD mean cosine {svd.mean_cosine:.4f}, paper AE {paper.mean_cosine:.4f} "
        f"({paper.wall_time_s:.0f} s)"
    )
