"""Transform coding: a few bits per entry in a decorrelated basis, spent where the model feels the error.

The rows of `E` (`V x d`) are mapped to `Y = E A` (`A = I`, or with calibration and a tied output head
`A = M^(1/2)` for `M = E[h h^T]` of the hidden states entering the head: then a squared error in `Y` is the
mean squared error of the logits), centred and rotated onto their principal axes, `Z = (Y - mu) P`. With
calibration, every row gets an importance `w_v` (the token's mean predicted probability, which weighs its logit's
error in the KL divergence, plus `input_weight` times its frequency as an input) and rows are grouped by importance
in tiers of doubling size. Each (tier, column) gets an integer number of bits by greedy marginal analysis (the next
bit goes where it removes the most importance-weighted expected distortion per stored bit, codebook growth
included), and is quantised by a 1-D Lloyd-Max codebook of `2^bits` values fitted to that tier's column, constrained
to a uniform grid of 16 (up to 3 bits) or 256 points spanning the codebook (`packed_codes.grid_points`), so that a tied
head can run from 4- and 8-bit integer matrices (`packed_runtime`); the constraint costs ~1 % of a 2-bit column's
distortion, ~7 % of a 3-bit one's, and nothing measurable from 4 bits up.

Decoding is linear: `E_hat = Z_hat (P^T A^-1) + mu A^-1`, so the decoder is one `Linear(d, d)` (an `Int8Linear` with
`decoder_dtype="int8"`, as in the preset: the float `d x d` weight would be a quarter of the bytes at ratio 20) and
the stored bytes are the packed codes, the codebooks, the tier of each row and that decoder, all counted against the
budget `bytes(E) / compression_ratio`.
"""

import dataclasses
import heapq
import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from ..cards import MethodText
from ..configuration import CompressedEmbeddingConfig, CompressedEmbeddingConfigError
from ..layer import Int8Linear, build_decoder
from ..packed_codes import MAX_BITS, grid_points, row_bytes
from ..packed_runtime import grid_of
from . import MethodConfig, MethodOutput, register_method

logger = logging.get_logger(__name__)

# Mean squared error of the Lloyd-Max quantiser of a unit Gaussian with 2^b levels, b = 0..8.
_GAUSSIAN_DISTORTION = (1.0, 0.3634, 0.1175, 0.03454, 0.009497, 0.002499, 0.000642, 0.000163, 0.0000413)
# The same with the codebook on its grid (`grid_lloyd_max`; measured on 200,000 Gaussian samples), which allocation
# uses.
_GRID_DISTORTION = (1.0, 0.3634, 0.1189, 0.03679, 0.009497, 0.002499, 0.000642, 0.000163, 0.0000413)
LLOYD_ITERATIONS = 20
CHUNK_ROWS = 16384  # rows transformed at a time (float64)
GRID_ITERATIONS = 20


def allocate_bits(
    variances: torch.Tensor,
    budget_bits: float,
    tier_sizes: list[int] | None = None,
    weights: list[float] | None = None,
    codebook_bits: int = 0,
    max_bits: int = MAX_BITS,
) -> list[list[int]]:
    """Integer bits per (tier, column), added one at a time where `weight_t * variance[t, i] * (D(b) - D(b + 1))`
    (the expected distortion it removes, `D` the Lloyd-Max distortion of a unit Gaussian) per stored bit is
    largest, while the bits stored (`tier_size` per row bit, plus `codebook_bits` per codebook entry added) fit in
    `budget_bits`. `D` is that of the grid-constrained quantiser (`grid_lloyd_max`). `variances` is `T x k` (or `k`
    for one tier); each tier's list is returned in non-increasing order.

    Example:

    ```python
    >>> import torch
    >>> allocate_bits(torch.tensor([16.0, 1.0, 0.01]), 5)
    [[4, 1, 0]]
    >>> allocate_bits(torch.tensor([[1.0, 1.0], [1.0, 1.0]]), 12, tier_sizes=[2, 2], weights=[10.0, 1.0])
    [[3, 3], [0, 0]]
    ```
    """
    variances = variances.double().clamp_min(0).reshape(-1, variances.shape[-1]).tolist()
    tier_sizes = tier_sizes or [1] * len(variances)
    weights = weights or [1.0] * len(variances)
    table = _GRID_DISTORTION
    bits = [[0] * len(row) for row in variances]

    def candidate(tier: int, column: int) -> tuple[float, int, int, int]:
        width = bits[tier][column]
        cost = tier_sizes[tier] + codebook_bits * 2**width
        gain = weights[tier] * variances[tier][column] * (table[width] - table[width + 1])
        return (-gain / max(cost, 1), tier, column, cost)

    heap = [candidate(t, i) for t in range(len(variances)) for i in range(len(variances[t]))]
    heapq.heapify(heap)
    used = 0
    while heap:
        _, tier, column, cost = heapq.heappop(heap)
        if used + cost > budget_bits:
            continue  # a cheaper step elsewhere may still fit
        used += cost
        bits[tier][column] += 1
        if bits[tier][column] < max_bits:
            heapq.heappush(heap, candidate(tier, column))
    return [sorted(widths, reverse=True) for widths in bits]


class _SortedValues:
    """Values sorted once, with float64 prefix sums of them and of their squares, so that one Lloyd step (assign every
    value to its nearest centroid, then sum each bucket) costs `O(levels log n)` instead of `O(n)`."""

    def __init__(self, values: torch.Tensor) -> None:
        self.values = values.sort().values
        ordered, zero = self.values.double(), torch.zeros(1, dtype=torch.float64)
        self.sums = torch.cat([zero, ordered.cumsum(0)])
        self.squares = torch.cat([zero, (ordered * ordered).cumsum(0)])

    def buckets(self, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(count, sum, sum of squares)` of the values nearest each of the sorted `centroids` (a value halfway between
        two goes to the lower one, as `torch.bucketize` assigns it)."""
        bounds = torch.searchsorted(self.values, (centroids[:-1] + centroids[1:]) / 2, right=True)
        edges = torch.cat([bounds.new_zeros(1), bounds, bounds.new_full((1,), self.values.numel())])
        lo, hi = edges[:-1], edges[1:]
        return (hi - lo).double(), self.sums[hi] - self.sums[lo], self.squares[hi] - self.squares[lo]


def _nearest(values: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The index of each value's nearest centroid (sorted centroids; halfway: the lower one)."""
    return torch.bucketize(values, (centroids[:-1] + centroids[1:]) / 2)


def lloyd_max(
    values: torch.Tensor, levels: int, generator: torch.Generator, ordered: _SortedValues | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D k-means (Lloyd-Max) of `values` into `levels` sorted centroids; returns (centroids, index of each value).

    Every value is assigned to its nearest centroid (the optimal assignment for the returned codebook). The steps run
    on the values sorted once (`ordered`, built here when not given).
    """
    if levels == 1:
        return values.mean().reshape(1), torch.zeros_like(values, dtype=torch.int64)
    sample = values[torch.randperm(values.numel(), generator=generator)[:65536]]
    centroids = torch.quantile(sample, torch.linspace(0.5 / levels, 1 - 0.5 / levels, levels, dtype=values.dtype))
    ordered = ordered if ordered is not None else _SortedValues(values)
    for _ in range(LLOYD_ITERATIONS):
        counts, sums, _ = ordered.buckets(centroids)
        means = (sums / counts.clamp_min(1)).to(values.dtype)
        centroids, _ = torch.where(counts > 0, means, centroids).sort()
    return centroids, _nearest(values, centroids)


def grid_lloyd_max(
    values: torch.Tensor, levels: int, points: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`lloyd_max` with the centroids on a uniform grid of `points` points spanning them: every centroid is
    `lo + (hi - lo) / (points - 1) * m` for an integer `m`, `lo` and `hi` the smallest and largest. Lloyd steps
    (assign, average, snap to the grid through the new extremes) from the unconstrained solution; the best codebook
    seen is returned (sorted; two centroids may coincide), with the index of each value's nearest centroid.

    Example:

    ```python
    >>> import torch
    >>> values = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    >>> codebook, index = grid_lloyd_max(values, 8, 16, torch.Generator().manual_seed(0))
    >>> m = (codebook - codebook[0]) / (codebook[-1] - codebook[0]) * 15
    >>> bool(torch.allclose(m, m.round(), atol=1e-4))
    True
    ```
    """
    if levels == 1:
        return lloyd_max(values, levels, generator)
    ordered = _SortedValues(values)
    centroids, index = lloyd_max(values, levels, generator, ordered)
    if levels <= 2:  # two points always lie on the grid through them
        return centroids, index
    best, best_error = None, float("inf")
    for _ in range(GRID_ITERATIONS):
        lo, hi = centroids[0].double(), centroids[-1].double()
        step = (hi - lo) / (points - 1)
        snapped = centroids.double() if step == 0 else lo + step * torch.round((centroids.double() - lo) / step)
        snapped = snapped.to(values.dtype)
        counts, sums, squares = ordered.buckets(snapped)
        at = snapped.double()
        error = (squares - 2 * at * sums + counts * at * at).sum().item()  # sum of (value - its centroid)^2
        if error < best_error:
            best, best_error = snapped, error
        means = (sums / counts.clamp_min(1)).to(values.dtype)
        centroids, _ = torch.where(counts > 0, means, snapped).sort()
    return best, _nearest(values, best)


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


def row_importance(calibration, num_rows: int, input_weight: float) -> torch.Tensor | None:
    """`w_v` (sums to 1): mean predicted probability (when measured) + `input_weight` x frequency of each token, with
    a floor of 1 % of the mass spread over all rows (a token unseen in calibration text is not worthless)."""
    if calibration is None:
        return None
    counts = calibration.token_counts.double()
    if counts.shape != (num_rows,):
        raise ValueError(f"Calibration token counts have shape {tuple(counts.shape)}; expected ({num_rows},).")
    weight = input_weight * counts / counts.sum().clamp_min(1)
    probability = getattr(calibration, "output_probability", None)
    if probability is not None:
        weight = weight + probability.double()[:num_rows]
    if not weight.sum() > 0:
        return None
    return 0.99 * weight / weight.sum() + 0.01 / num_rows


def tier_sizes_for(num_rows: int, first_tier_rows: int) -> list[int]:
    """`first, first, 2 first, 4 first, ...` rows, doubling while the rest holds at least one more such
    tier; the last tier takes the rest.

    Example:

    ```python
    >>> tier_sizes_for(1000, 100)
    [100, 100, 200, 600]
    ```
    """
    if not 0 < first_tier_rows < num_rows:
        return [num_rows]
    sizes = [first_tier_rows]
    size = first_tier_rows
    while sum(sizes) + 2 * size <= num_rows:
        sizes.append(size)
        size *= 2
    return sizes + [num_rows - sum(sizes)]


def _tiers(importance: torch.Tensor | None, num_rows: int, first_tier_rows: int) -> torch.Tensor:
    """Tier of every row: rows ranked by importance (ties: lower id first) cut by `tier_sizes_for`."""
    tiers = torch.zeros(num_rows, dtype=torch.int64)
    if importance is None:
        return tiers
    order = torch.sort(importance, descending=True, stable=True).indices
    start = 0
    for tier, size in enumerate(tier_sizes_for(num_rows, first_tier_rows)):
        tiers[order[start : start + size]] = tier
        start += size
    return tiers


def _stored_bytes(bits: list[list[int]], sizes: list[int], decoder_bytes: int, element_size: int) -> int:
    codes = sum(n * row_bytes(widths) for n, widths in zip(sizes, bits))
    codebooks = sum(2**b for widths in bits for b in widths) * element_size
    return codes + codebooks + decoder_bytes + sum(sizes)  # + one tier byte per row


def _decoder_bytes(d: int, dtype: torch.dtype, int8: bool) -> int:
    """Bytes of the `d -> d` linear decoder with bias that the layer will store (built on the meta device)."""
    decoder = build_decoder(d, d, device="meta", dtype=dtype, int8=int8)
    return sum(p.numel() * p.element_size() for p in decoder.parameters())


def byte_budget(
    num_rows: int, d: int, dtype: torch.dtype, config: CompressedEmbeddingConfig, tier_sizes: list[int]
) -> tuple[float, int, int]:
    """`(budget, fewest, most)` for a `num_rows x d` embedding in `dtype` cut into `tier_sizes`: the bytes
    `config.compression_ratio` allows (`bytes(E) / ratio`, what the allocation spends), and the bytes stored when
    every column has 0 bits (the decoder, one tier byte per row, one-entry codebooks) or `MAX_BITS` bits. Raises
    `ValueError` when the fewest exceed the budget. What is stored is at most `min(budget, most)`, exactly `most` when
    that fits; below, where the allocation stops depends on the data (the columns' variances)."""
    element_size = torch.empty((), dtype=dtype).element_size()
    budget = num_rows * d * element_size / config.compression_ratio
    decoder = _decoder_bytes(d, dtype, config.decoder_dtype == "int8")
    fewest = _stored_bytes([[0] * d] * len(tier_sizes), tier_sizes, decoder, element_size)
    most = _stored_bytes([[MAX_BITS] * d] * len(tier_sizes), tier_sizes, decoder, element_size)
    if fewest > budget:
        raise ValueError(
            f"compression_ratio={config.compression_ratio} is out of reach for a {num_rows} x {d} embedding with "
            f"transform_coding (at most {num_rows * d * element_size / fewest:.2f} with {len(tier_sizes)} tier(s): "
            "the decoder and codebooks alone take more). Ask for a smaller ratio, or fewer tiers (first_tier_rows)."
        )
    return budget, fewest, most


def _fill_padding(
    bits: list[list[int]], variances: torch.Tensor, weights: list[float], spare_bytes: float, element_size: int
) -> list[list[int]]:
    """Spend the padding of the bit planes: while a plane of a tier has unused bits in its last byte, give one to
    the column of that tier one bit short of it that gains most (only its codebook grows, within `spare_bytes`)."""
    bits = [list(widths) for widths in bits]
    planes = [[sum(b > j for b in widths) for j in range(MAX_BITS)] for widths in bits]  # columns in each plane
    table = _GRID_DISTORTION
    while True:
        best = None
        for tier, widths in enumerate(bits):
            for column, width in enumerate(widths):
                if width >= MAX_BITS or 2**width * element_size > spare_bytes:
                    continue
                if planes[tier][width] % 8 == 0:  # plane `width` has no free bit in its last byte
                    continue
                gain = weights[tier] * float(variances[tier, column]) * (table[width] - table[width + 1])
                if best is None or gain > best[0]:
                    best = (gain, tier, column)
        if best is None or best[0] <= 0:
            return [sorted(widths, reverse=True) for widths in bits]
        _, tier, column = best
        spare_bytes -= 2 ** bits[tier][column] * element_size
        planes[tier][bits[tier][column]] += 1
        bits[tier][column] += 1


KL_LEARNING_RATE = 3e-4
KL_BATCH_TOKENS = 256
KL_INPUT_ROWS = 4096
# Up to this many rows every fitting step's softmax runs over the whole vocabulary. Beyond, each step computes the
# logits of `KL_SAMPLED_ROWS` rows: the `KL_TOP_ROWS` most important ones and a fresh uniform sample of the others,
# each sampled row standing for `others / sampled` rows in both distributions' normalisers (a self-normalised
# estimate of the full KL), so that a step costs the same for 262,144 rows as for 32,768.
KL_FULL_VOCAB = 65536
KL_SAMPLED_ROWS = 32768
KL_TOP_ROWS = 16384


def fit_to_logits(
    matrix: torch.Tensor,
    codes: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    grid: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    weight: torch.Tensor,
    bias: torch.Tensor,
    hidden: torch.Tensor,
    row_weights: torch.Tensor | None,
    steps: int,
    seed: int = 0,
    show_progress: bool = True,
    int8: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float]]:
    """Fit the codebooks and the linear decoder (the integer codes stay) so that a tied head's next-token
    distribution `softmax(h E_hat^T)`, `E_hat = codebook[index] W^T + b` (`codes = (values, starts, tiers)`: entry
    `(v, i)` of `index` is `values[v, i] + starts[tiers[v], i]`), matches the original `softmax(h E^T)` on
    the stored hidden states `hidden` (KL divergence, `KL_BATCH_TOKENS` states per Adam step), plus the relative
    squared error of `KL_INPUT_ROWS` rows drawn by `row_weights` (the input side). Each codebook stays on its grid:
    `grid = (offsets, spans, fractions, columns)` gives `codebook = offsets[columns] + spans[columns] * fractions`
    (per codebook its smallest value and the width of its grid; per entry its position on the grid as a fraction of
    that width, and the codebook it belongs to), and the offsets and spans are what is fitted (so that one Adam step
    moves a value by at most about twice the learning rate, as for free values). The logits are computed in code space,
    `(h W) codebook[index]^T + h . b`. With `int8`, `W` is used as `Int8Linear` will store it (quantised, with
    straight-through gradients). Returns the fitted codebook, weight, bias and the KL of each step.
    """
    generator = torch.Generator().manual_seed(seed)
    offsets, spans, fractions, columns = grid
    offsets = offsets.detach().clone().requires_grad_(True)
    spans = spans.detach().clone().requires_grad_(True)
    weight = weight.detach().clone().requires_grad_(True)
    bias = bias.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([offsets, spans, weight, bias], lr=KL_LEARNING_RATE)
    if row_weights is None:
        row_weights = torch.ones(matrix.shape[0], dtype=torch.float64)

    def codebook() -> torch.Tensor:
        return offsets[columns] + spans[columns] * fractions

    values, starts, tiers = codes

    def index_of(rows) -> torch.Tensor:  # the joined codebooks' entries of these rows
        return values[rows].long() + starts[tiers[rows]]

    num_rows = matrix.shape[0]
    sampled = num_rows > KL_FULL_VOCAB
    index = None if sampled else index_of(slice(None))
    if sampled:
        top = torch.topk(row_weights, KL_TOP_ROWS).indices
        others = torch.ones(num_rows, dtype=torch.bool)
        others[top] = False
        others = others.nonzero().flatten()
        draws = KL_SAMPLED_ROWS - KL_TOP_ROWS
        log_weight = torch.cat([torch.zeros(KL_TOP_ROWS), torch.full((draws,), math.log(others.numel() / draws))])

    history = []
    for _ in tqdm(range(steps), desc="fitting to the logits", disable=not show_progress):
        h = hidden[torch.randint(0, hidden.shape[0], (KL_BATCH_TOKENS,), generator=generator)]
        used = weight + (Int8Linear.rounded(weight) - weight).detach() if int8 else weight  # straight-through
        rows = torch.multinomial(row_weights, KL_INPUT_ROWS, replacement=True, generator=generator)
        if sampled:  # the logits of the top rows and a sample of the others, weighted in the normalisers
            vocab = torch.cat([top, others[torch.randperm(others.numel(), generator=generator)[:draws]]])
            with torch.no_grad():
                teacher = (h @ matrix[vocab].T + log_weight).log_softmax(-1)
            student = ((h @ used) @ codebook()[index_of(vocab)].T + (h @ bias)[:, None] + log_weight).log_softmax(-1)
            decoded = codebook()[index_of(rows)]
        else:
            with torch.no_grad():
                teacher = (h @ matrix.T).log_softmax(-1)
            decoded = codebook()[index]
            student = ((h @ used) @ decoded.T + (h @ bias)[:, None]).log_softmax(-1)
            decoded = decoded[rows]
        kl = (teacher.exp() * (teacher - student)).sum(-1).mean()
        target = matrix[rows]
        inputs = (decoded @ used.T + bias - target).pow(2).sum() / target.pow(2).sum()
        optimizer.zero_grad()
        (kl + inputs).backward()
        optimizer.step()
        history.append(kl.item())
    with torch.no_grad():
        return codebook(), weight.detach(), bias.detach(), history


def _entry_grid(codebooks: list[torch.Tensor], bits: list[list[int]]) -> tuple[torch.Tensor, ...]:
    """`(offsets, spans, fractions, columns)` of the tiers' codebooks joined, as `fit_to_logits` takes them, read
    back from their values by `grid_of` (the runtime layout's reading of them, so what is fitted is what runs)."""
    offsets, spans, fractions, columns = [], [], [], []
    for book, widths in zip(codebooks, bits):
        lo, step, levels = grid_of(book, widths)
        intervals = torch.tensor([grid_points(b) - 1 for b in widths], dtype=torch.float32)
        column = torch.repeat_interleave(torch.arange(len(widths)), torch.tensor([2**b for b in widths]))
        columns.append(column + sum(len(o) for o in offsets))
        offsets.append(lo)
        spans.append(step * intervals)
        fractions.append(levels.float() / intervals[column])
    return torch.cat(offsets), torch.cat(spans), torch.cat(fractions), torch.cat(columns)


def _card_rows(size: dict, spec: CompressedEmbeddingConfig) -> list[tuple[str, str]]:
    """The model card's "Compression" rows: code columns, bits per entry and tiers, byte ratio."""
    tiers = size["tier_sizes"] or []
    tier_text = f"{len(tiers)} tier{'s' if len(tiers) != 1 else ''}"
    if len(tiers) > 1:
        tier_text += f" of rows by token importance: {', '.join(f'{n:,}' for n in tiers)} rows"
    return [
        ("code columns", f"{size['code_dim']} (decorrelated axes of the {size['hidden']}-wide rows)"),
        ("bits per code entry", f"{size['mean_bits']:.2f} on average (0-8 per column; {tier_text})"),
        ("compression ratio", f"{size['bytes_ratio']:.2f}x (bytes, against the embedding in {size['dtype']})"),
    ]


def _card_history(history: list[float], spec: CompressedEmbeddingConfig) -> list[tuple[str, str]]:
    """The model card's rows on the loss history: the relative quantisation error, then the KL of each logit-fitting
    step."""
    if not history:
        return []
    rows = [("relative quantisation error (decorrelated space, before fitting)", f"{history[0]:.4g}")]
    kl = history[1:]
    if kl:
        rows.append(
            (
                "fitting to the logits: KL divergence to the original next-token distribution",
                f"{kl[0]:.4g} -> {kl[-1]:.4g} over {len(kl)} steps (codebooks and decoder; calibration hidden states)",
            )
        )
    else:
        why = (
            "kl_steps=0"
            if not spec.kl_steps
            else "no tied output head"
            if not spec.tied_output_head
            else "no calibration hidden states"
        )
        rows.append(("fitting to the logits", f"not run ({why})"))
    return rows


@dataclass
class TransformCodingConfig(MethodConfig):
    """Settings of transform coding (`method="transform_coding"`, the default): packed codes of a few bits per entry,
    sized by `compression_ratio` in bytes (code width = hidden size), an int8 linear decoder.

    Args:
        first_tier_rows (`int`, *optional*, defaults to 128):
            With calibration: rows ranked by importance form tiers of this many rows, as many again, then doubling;
            bits go where they buy the most. 0, or no calibration: one tier.
        input_weight (`float`, *optional*, defaults to 1.0):
            A row's importance is its token's mean predicted probability plus `input_weight` times its frequency in
            the calibration text.
        kl_steps (`int`, *optional*):
            Adam steps fitting the codebooks and decoder (not the codes) to the original head's next-token
            distribution on calibration hidden states (tied head only; skipped without them). Default: 100, fixed when
            the config is resolved.
    """

    name = "transform_coding"
    summary = (
        "the best measured method: it keeps a language model's perplexity where the others break it; "
        "docs/results/quality.md"
    )
    decoder_bias = True
    packed_codes = True
    presets = {"transform_coding": {}}
    card = MethodText(
        name="transform coding (packed few-bit codes, per-column codebooks, linear decoder)",
        description=(
            "Rows are mapped to a decorrelated basis (weighted, given calibration, so that squared error there is the "
            "error the output head feels), and each of the {code_dim} axes is quantised to an integer code of 0-8 "
            "bits ({mean_bits:.2f} bits per entry on average) indexing a small per-column codebook; bits go where "
            "they remove the most error, with more bits for important tokens when rows are split in tiers. With "
            "calibration hidden states and a tied head, the codebooks and the decoder are then fitted to the "
            "original model's next-token distribution (the codes stay). Its ratio counts bytes: the embedding's "
            "bytes in the model's dtype / every byte stored (codes, codebooks, decoder)."
        ),
        ratio_unit="bytes",
        size_rows=_card_rows,
        history_rows=_card_history,
        data_free="none: compressed data-free (no calibration text; bits and codebooks from the embedding alone)",
    )

    first_tier_rows: int = field(
        default=128, metadata={"help": "Rows of the most important tier; tiers double (128)."}
    )
    input_weight: float = field(default=1.0, metadata={"help": "Weight of input frequency in a row's importance (1)."})
    kl_steps: int | None = field(
        default=None,
        metadata={"help": "With calibration text: steps fitting codebooks + decoder to the logits (100)."},
    )

    def validate(self) -> None:
        super().validate()
        self.require_int("first_tier_rows", minimum=0)
        self.require_number("input_weight")
        self.require_int("kl_steps", minimum=0, optional=True)

    def check(self, spec: CompressedEmbeddingConfig) -> None:
        if spec.compression_ratio is None:
            spec._fail(
                "code_dim",
                "unset with method='transform_coding' (the default method), which keeps all components and is sized "
                "by compression_ratio; for codes of width k pass method='autoencoder' (the paper's) or 'svd'",
            )
        if spec.decoder_hidden_dims:
            spec._fail("decoder_hidden_dims", "[] (transform_coding's decoder is linear)")
        if not spec.freeze_codes:
            spec._fail("freeze_codes", "True with method='transform_coding' (packed integer codes cannot be trained)")

    def resolved(self, spec: CompressedEmbeddingConfig) -> tuple[MethodConfig, dict]:
        settings = self if self.kl_steps is not None else dataclasses.replace(self, kl_steps=100)
        return settings, {"decoder_bias": True, "decoder_dtype": "float" if spec.decoder_hidden_dims else "int8"}

    def code_dim_for(self, spec: CompressedEmbeddingConfig, vocab_size: int, hidden_size: int) -> int:
        if spec.code_dim not in (None, hidden_size):  # k = d; the ratio sets the bits per entry instead
            raise CompressedEmbeddingConfigError(
                f"CompressedEmbeddingConfig.code_dim is invalid: got {spec.code_dim}; method='transform_coding' "
                f"keeps all {hidden_size} components and sizes its codes by compression_ratio: leave code_dim unset."
            )
        return hidden_size


def transform_coding(
    matrix: torch.Tensor,
    config: CompressedEmbeddingConfig,
    *,
    show_progress: bool = True,
    calibration=None,
    dtype: torch.dtype = torch.float32,
) -> MethodOutput:
    """Transform coding of `matrix` at `config.compression_ratio` (bytes vs the embedding in `dtype`). The loss
    history holds the relative quantisation error (in the transformed space), then the KL of each fitting step."""
    num_rows, d = matrix.shape
    clock, stages = time.perf_counter(), {}

    def stage(name: str) -> None:  # the seconds since the previous stage ended
        nonlocal clock
        stages[name], clock = time.perf_counter() - clock, time.perf_counter()

    element_size = torch.empty((), dtype=dtype).element_size()
    forward, inverse = _metric(config, calibration, d)
    # in float64 a chunk of rows at a time: no V x d float64 copy of the matrix
    chunks = [slice(start, start + CHUNK_ROWS) for start in range(0, num_rows, CHUNK_ROWS)]
    mean = sum(matrix[rows].double().sum(0) for rows in chunks) @ forward / num_rows
    gram = torch.zeros(d, d, dtype=torch.float64)
    for rows in chunks:
        centred = matrix[rows].double() @ forward - mean
        gram += centred.T @ centred
    _, axes = torch.linalg.eigh(gram)
    axes = axes.flip(1)
    signs = torch.sign(axes[axes.abs().argmax(0), torch.arange(d)])  # a deterministic sign per axis
    axes = axes * torch.where(signs == 0, 1.0, signs)
    rotated = torch.empty(num_rows, d)
    for rows in chunks:
        rotated[rows] = ((matrix[rows].double() @ forward - mean) @ axes).float()
    importance = row_importance(calibration, num_rows, config.input_weight)
    tiers = _tiers(importance, num_rows, config.first_tier_rows)
    sizes = torch.bincount(tiers, minlength=int(tiers.max()) + 1).tolist()
    variances = torch.stack([rotated[tiers == tier].var(0, unbiased=False) for tier in range(len(sizes))])
    weights = [1.0] if importance is None else [float(importance[tiers == t].sum()) for t in range(len(sizes))]
    stage("transform")

    decoder = _decoder_bytes(d, dtype, config.decoder_dtype == "int8")
    budget, fixed, _ = byte_budget(num_rows, d, dtype, config, sizes)  # fixed: tier bytes, 1-entry codebooks

    def allocation(target_bits: float) -> list[list[int]]:
        return allocate_bits(variances, target_bits, sizes, weights, codebook_bits=8 * element_size)

    # The greedy count ignores the padding of each bit plane to whole bytes: search the largest target that fits.
    lo, hi = 0.0, 8.0 * (budget - fixed)
    bits = allocation(hi)
    if _stored_bytes(bits, sizes, decoder, element_size) > budget:
        bits = allocation(lo)
        for _ in range(16):
            mid = (lo + hi) / 2
            candidate = allocation(mid)
            if _stored_bytes(candidate, sizes, decoder, element_size) <= budget:
                lo, bits = mid, candidate
            else:
                hi = mid
    spare = budget - _stored_bytes(bits, sizes, decoder, element_size)
    bits = _fill_padding(bits, variances, weights, spare, element_size)
    stage("allocation")

    generator = torch.Generator().manual_seed(config.seed)
    values = torch.zeros(num_rows, d, dtype=torch.uint8)  # every code has at most 8 bits
    squared_error = 0.0
    codebooks = []
    starts = []  # where each (tier, column) codebook starts in all the codebooks joined
    position = 0
    steps = tqdm(total=sum(len(w) for w in bits), desc="transform coding", disable=not show_progress)
    for tier, widths in enumerate(bits):
        rows = tiers == tier
        columns = rotated[rows].T.contiguous()  # this tier's rows, one column after another
        indices = torch.empty(columns.shape, dtype=torch.uint8)
        book = []
        starts.append([])
        for column, width in enumerate(widths):
            centroids, index = grid_lloyd_max(columns[column], 2**width, grid_points(width), generator)
            indices[column] = index
            squared_error += (centroids[index] - columns[column]).double().pow(2).sum().item()
            book.append(centroids)
            starts[tier].append(position)
            position += centroids.numel()
            steps.update()
        values[rows] = indices.T
        codebooks.append(torch.cat(book))
    steps.close()
    decoder_matrix = axes.T @ inverse  # E_hat = Z_hat (P^T A^-1) + mu A^-1
    state = {"weight": decoder_matrix.T.float().contiguous(), "bias": (mean @ inverse).float()}
    total = sum(rotated[rows].double().pow(2).sum().item() for rows in chunks)
    error = squared_error / max(total, 1e-30)  # relative, in the transformed space
    history = [math.sqrt(float(error))]
    stage("quantisation")
    hidden = getattr(calibration, "output_inputs", None)
    if config.kl_steps and hidden is None:
        logger.info("No calibration hidden states (collect_calibration keeps them): no fitting to the logits.")
    elif config.kl_steps and not config.tied_output_head:
        logger.info("No fitting to the logits: no output head reads these codes (they are only looked up).")
    elif config.kl_steps:
        del rotated
        flat, weight, bias, kl = fit_to_logits(
            matrix, (values, torch.tensor(starts), tiers), _entry_grid(codebooks, bits), state["weight"],
            state["bias"], hidden.float(), None if importance is None else importance.clone(), config.kl_steps,
            config.seed, show_progress,
            config.decoder_dtype == "int8",
        )  # fmt: skip
        codebooks = list(flat.split([book.numel() for book in codebooks]))
        state = {"weight": weight, "bias": bias}
        history += kl
        stage("fitting")
    return MethodOutput(
        codes=None,
        decoder_state=state,
        loss_history=history,
        packed={"values": values, "row_tiers": tiers, "codebooks": codebooks},
        config_updates={"code_bits": bits, "tier_sizes": sizes},
        stage_seconds=stages,
    )


register_method(TransformCodingConfig, transform_coding)
