"""Transform coding: a few bits per entry in a decorrelated basis, spent where the model feels the error.

The rows of `E` (`V x d`) are mapped to `Y = E A` (`A = I`, or with calibration and a tied output head
`A = M^(1/2)` for `M = E[h h^T]` of the hidden states entering the head: then a squared error in `Y` is the
mean squared error of the logits), centred and rotated onto their principal axes, `Z = (Y - mu) P`. Each column of
`Z` gets an integer number of bits by greedy reverse water-filling (the next bit goes where it removes the most
expected distortion), and is quantised by a 1-D Lloyd-Max codebook of `2^bits` values fitted to that column. Rows
of frequent tokens (counted on calibration text) form their own tier with `frequent_bits` bits per entry.

Decoding is linear: `E_hat = Z_hat (P^T A^-1) + mu A^-1`, so the decoder is one `Linear(d, d)` and the stored bytes
are the packed codes, the codebooks, the tier of each row and that decoder, all counted against the budget
`bytes(E) / compression_ratio`.
"""

import math

import torch
from tqdm.auto import tqdm

from ..configuration import CompressedEmbeddingConfig
from ..packed_codes import MAX_BITS, row_bytes
from . import MethodOutput, register_method

# Mean squared error of the Lloyd-Max quantiser of a unit Gaussian with 2^b levels, b = 0..8.
_GAUSSIAN_DISTORTION = (1.0, 0.3634, 0.1175, 0.03454, 0.009497, 0.002499, 0.000642, 0.000163, 0.0000413)
LLOYD_ITERATIONS = 20


def allocate_bits(variances: torch.Tensor, total_bits: int, max_bits: int = MAX_BITS) -> list[int]:
    """Integer bits per column, summing to `total_bits` (at most `max_bits` each), added one at a time where the
    expected distortion `variance * D(bits)` drops most; returned sorted in non-increasing order.

    Example:

    ```python
    >>> import torch
    >>> allocate_bits(torch.tensor([16.0, 1.0, 0.01]), 5)
    [4, 1, 0]
    ```
    """
    table = torch.tensor(_GAUSSIAN_DISTORTION[: max_bits + 1] + (0.0,), dtype=torch.float64)
    variances = variances.double().clamp_min(0)
    total_bits = max(0, min(int(total_bits), max_bits * variances.numel()))
    bits = torch.zeros(variances.numel(), dtype=torch.int64)
    for _ in range(total_bits):
        gain = variances * (table[bits] - table[bits + 1])
        gain[bits >= max_bits] = -1.0
        bits[int(gain.argmax())] += 1
    return sorted(bits.tolist(), reverse=True)


def lloyd_max(values: torch.Tensor, levels: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D k-means (Lloyd-Max) of `values` into `levels` sorted centroids; returns (centroids, index of each value).

    Every value is assigned to its nearest centroid (the optimal assignment for the returned codebook).
    """
    if levels == 1:
        return values.mean().reshape(1), torch.zeros_like(values, dtype=torch.int64)
    sample = values[torch.randperm(values.numel(), generator=generator)[:65536]]
    centroids = torch.quantile(sample, torch.linspace(0.5 / levels, 1 - 0.5 / levels, levels, dtype=values.dtype))
    for _ in range(LLOYD_ITERATIONS):
        index = torch.bucketize(values, (centroids[:-1] + centroids[1:]) / 2)
        sums = torch.zeros(levels, dtype=values.dtype).index_add_(0, index, values)
        counts = torch.bincount(index, minlength=levels).to(values.dtype)
        centroids, _ = torch.where(counts > 0, sums / counts.clamp_min(1), centroids).sort()
    return centroids, torch.bucketize(values, (centroids[:-1] + centroids[1:]) / 2)


def _metric(config: CompressedEmbeddingConfig, calibration, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`A` and `A^-1`: identity, or the square root of the normalised head metric `M / mean(diag M)`."""
    moment = None if calibration is None else calibration.output_second_moment
    if moment is None or not config.tied_output_head:
        eye = torch.eye(d, dtype=torch.float64)
        return eye, eye
    moment = moment.double() / moment.diagonal().mean()
    moment = moment + 1e-6 * torch.eye(d, dtype=torch.float64)  # a direction the head never saw still costs a little
    values, vectors = torch.linalg.eigh(moment)
    return (vectors * values.sqrt()) @ vectors.T, (vectors / values.sqrt()) @ vectors.T


def _tiers(config: CompressedEmbeddingConfig, calibration, num_rows: int) -> torch.Tensor:
    """Tier of every row: 0 for the `frequent_tokens` most frequent (ties: lower id first), 1 for the rest."""
    tiers = torch.zeros(num_rows, dtype=torch.int64)
    if calibration is None or not 0 < config.frequent_tokens < num_rows:
        return tiers
    counts = calibration.token_counts.to(torch.int64)
    if counts.shape != (num_rows,):
        raise ValueError(f"Calibration token counts have shape {tuple(counts.shape)}; expected ({num_rows},).")
    order = torch.sort(counts, descending=True, stable=True).indices
    tiers[order[config.frequent_tokens :]] = 1
    return tiers


def _stored_bytes(bits: list[list[int]], sizes: list[int], d: int, element_size: int) -> int:
    codes = sum(n * row_bytes(widths) for n, widths in zip(sizes, bits))
    codebooks = sum(2**b for widths in bits for b in widths) * element_size
    return codes + codebooks + (d * d + d) * element_size + sum(sizes)  # + decoder + one tier byte per row


@register_method("transform_coding")
def transform_coding(
    matrix: torch.Tensor,
    config: CompressedEmbeddingConfig,
    *,
    show_progress: bool = True,
    calibration=None,
    dtype: torch.dtype = torch.float32,
) -> MethodOutput:
    """Transform coding of `matrix` at `config.compression_ratio` (bytes vs the embedding in `dtype`)."""
    num_rows, d = matrix.shape
    element_size = torch.empty((), dtype=dtype).element_size()
    budget = num_rows * d * element_size / config.compression_ratio
    forward, inverse = _metric(config, calibration, d)
    transformed = matrix.double() @ forward
    mean = transformed.mean(0)
    transformed -= mean
    _, axes = torch.linalg.eigh(transformed.T @ transformed)
    axes = axes.flip(1)
    signs = torch.sign(axes[axes.abs().argmax(0), torch.arange(d)])  # a deterministic sign per axis
    axes = axes * torch.where(signs == 0, 1.0, signs)
    rotated = (transformed @ axes).float()
    del transformed
    tiers = _tiers(config, calibration, num_rows)
    sizes = torch.bincount(tiers, minlength=int(tiers.max()) + 1).tolist()
    variances = [rotated[tiers == tier].var(0, unbiased=False) for tier in range(len(sizes))]

    def allocation(rest_bits: int) -> list[list[int]]:
        if len(sizes) == 1:
            return [allocate_bits(variances[0], rest_bits)]
        return [allocate_bits(variances[0], round(config.frequent_bits * d)), allocate_bits(variances[1], rest_bits)]

    lo, hi = 0, MAX_BITS * d  # the most bits per row of the last tier that still fits the budget
    if _stored_bytes(allocation(lo), sizes, d, element_size) > budget:
        smallest = num_rows * d * element_size / _stored_bytes(allocation(lo), sizes, d, element_size)
        raise ValueError(
            f"compression_ratio={config.compression_ratio} is out of reach for a {num_rows} x {d} embedding with "
            f"transform_coding (at most {smallest:.2f} with frequent_tokens={config.frequent_tokens}, "
            f"frequent_bits={config.frequent_bits}). Ask for a smaller ratio, or fewer frequent tokens or bits."
        )
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _stored_bytes(allocation(mid), sizes, d, element_size) <= budget:
            lo = mid
        else:
            hi = mid - 1
    bits = allocation(lo)

    generator = torch.Generator().manual_seed(config.seed)
    values = torch.zeros(num_rows, d, dtype=torch.int64)
    squared_error = 0.0
    codebooks = []
    steps = tqdm(total=sum(len(w) for w in bits), desc="transform coding", disable=not show_progress)
    for tier, widths in enumerate(bits):
        rows = tiers == tier
        book = []
        for column, width in enumerate(widths):
            centroids, index = lloyd_max(rotated[rows, column], 2**width, generator)
            values[rows, column] = index
            squared_error += (centroids[index] - rotated[rows, column]).double().pow(2).sum().item()
            book.append(centroids)
            steps.update()
        codebooks.append(torch.cat(book))
    steps.close()
    decoder_matrix = axes.T @ inverse  # E_hat = Z_hat (P^T A^-1) + mu A^-1
    state = {"weight": decoder_matrix.T.float().contiguous(), "bias": (mean @ inverse).float()}
    error = squared_error / max(rotated.double().pow(2).sum().item(), 1e-30)  # relative, in the transformed space
    return MethodOutput(
        codes=None,
        decoder_state=state,
        loss_history=[math.sqrt(float(error))],
        packed={"values": values, "row_tiers": tiers, "codebooks": codebooks},
        config_updates={"code_bits": bits, "tier_sizes": sizes},
    )
