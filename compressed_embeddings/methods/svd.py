"""Truncated SVD: the baseline the paper compares against.

Codes are `U_k S_k` (V x k) and the decoder is `V_k^T` (a bias-free `Linear(k, d)`); with
`decoder_bias=True` the rows are centred first and the mean becomes the decoder bias.

Two solvers, both streaming over row chunks so that only one copy of E is ever held:
- `"exact"`: eigendecomposition of the `d x d` Gram matrix `E^T E`, accumulated in float64. It gives the
  optimal rank-k subspace (Eckart-Young) up to float64 rounding, in `O(V d^2)` time.
- `"randomized"`: Halko-Martinsson-Tropp range finder with power iterations, `O(V d k)`, for very large `d`.
"""

from dataclasses import dataclass, field

import torch

from ..cards import PAPER, PAPER_BIBTEX, MethodText, no_history, parameter_rows
from ..configuration import CompressedEmbeddingConfig
from . import MethodConfig, MethodOutput, register_method

EXACT_LIMIT = 50_000_000  # "auto" uses the exact solver up to this many entries, or when d <= 8192
CHUNK_ROWS = 16384


def _chunks(num_rows: int, size: int = CHUNK_ROWS):
    for start in range(0, num_rows, size):
        yield slice(start, min(start + size, num_rows))


def _fix_signs(basis: torch.Tensor) -> torch.Tensor:
    """Make each column's largest-magnitude entry positive (a deterministic choice of singular vector sign)."""
    index = basis.abs().argmax(dim=0)
    signs = torch.sign(basis[index, torch.arange(basis.shape[1])])
    signs[signs == 0] = 1
    return basis * signs


def _exact_basis(matrix: torch.Tensor, mean: torch.Tensor | None, rank: int) -> torch.Tensor:
    d = matrix.shape[1]
    gram = torch.zeros(d, d, dtype=torch.float64)
    for rows in _chunks(matrix.shape[0]):
        block = matrix[rows].double()
        if mean is not None:
            block = block - mean
        gram += block.T @ block
    _, vectors = torch.linalg.eigh(gram)  # ascending eigenvalues
    return vectors[:, -rank:].flip(1)


def _randomized_basis(
    matrix: torch.Tensor, mean: torch.Tensor | None, rank: int, oversamples: int, iterations: int, seed: int
) -> torch.Tensor:
    d = matrix.shape[1]
    width = min(rank + oversamples, d)
    generator = torch.Generator().manual_seed(seed)
    basis = torch.randn(d, width, generator=generator, dtype=torch.float64)

    def gram_times(block_basis: torch.Tensor) -> torch.Tensor:  # (E^T E) @ Q, streamed
        out = torch.zeros_like(block_basis)
        for rows in _chunks(matrix.shape[0]):
            block = matrix[rows].double()
            if mean is not None:
                block = block - mean
            out += block.T @ (block @ block_basis)
        return out

    basis, _ = torch.linalg.qr(gram_times(basis))
    for _ in range(iterations):
        basis, _ = torch.linalg.qr(gram_times(basis))
    # Rayleigh-Ritz on the captured subspace.
    small = basis.T @ gram_times(basis)
    _, vectors = torch.linalg.eigh((small + small.T) / 2)
    return (basis @ vectors)[:, -rank:].flip(1)


@dataclass
class SVDConfig(MethodConfig):
    """Settings of truncated SVD (`method="svd"`), the baseline.

    Args:
        svd_solver (`str`, *optional*, defaults to `"auto"`):
            `"exact"`, `"randomized"` (for large vocabularies) or `"auto"` (randomized above 50M entries).
        svd_oversamples (`int`, *optional*, defaults to 10):
            Oversampling of the randomized SVD.
        svd_power_iterations (`int`, *optional*, defaults to 4):
            Power iterations of the randomized SVD.
    """

    name = "svd"
    summary = "truncated SVD, the baseline"
    decoder_bias = False
    presets = {"svd": {}}
    card = MethodText(
        name="truncated SVD (codes `U_k S_k`, decoder `V_k^T`), the baseline",
        description=(
            "The embedding is replaced by its best rank-{code_dim} approximation in the least-squares sense "
            f"(truncated SVD), the baseline the [paper]({PAPER}) compares its autoencoder with; closed form, no "
            "training, no data. Its ratio counts stored parameters."
        ),
        ratio_unit="parameters",
        size_rows=parameter_rows,
        history_rows=no_history,
        citation=PAPER_BIBTEX,
    )

    svd_solver: str = field(
        default="auto", metadata={"help": "SVD solver (auto).", "choices": ("auto", "exact", "randomized")}
    )
    svd_oversamples: int = field(default=10, metadata={"help": "Randomized SVD oversampling (10)."})
    svd_power_iterations: int = field(default=4, metadata={"help": "Randomized SVD power iterations (4)."})

    def validate(self) -> None:
        super().validate()
        self.require_int("svd_oversamples", "svd_power_iterations", minimum=0)


def svd(matrix: torch.Tensor, config: CompressedEmbeddingConfig, *, show_progress: bool = True) -> MethodOutput:
    """Truncated SVD of `matrix` at rank `config.code_dim`."""
    num_rows, d = matrix.shape
    rank = config.code_dim
    if config.decoder_hidden_dims:
        raise ValueError("method='svd' gives a linear decoder; leave decoder_hidden_dims empty.")
    mean = None
    if config.use_decoder_bias:  # summed chunk by chunk in float64: no float64 copy of E
        mean = sum(matrix[rows].double().sum(0) for rows in _chunks(num_rows)) / num_rows
    solver = config.svd_solver
    if solver == "auto":
        solver = "exact" if num_rows * d <= EXACT_LIMIT or d <= 8192 else "randomized"
    if solver == "exact":
        basis = _exact_basis(matrix, mean, rank)
    else:
        basis = _randomized_basis(matrix, mean, rank, config.svd_oversamples, config.svd_power_iterations, config.seed)
    basis = _fix_signs(basis)
    codes = torch.empty(num_rows, rank, dtype=torch.float32)
    for rows in _chunks(num_rows):
        block = matrix[rows].double()
        if mean is not None:
            block = block - mean
        codes[rows] = (block @ basis).float()
    state = {"weight": basis.float().contiguous()}
    if mean is not None:
        state["bias"] = mean.float()
    return MethodOutput(codes=codes, decoder_state=state)


register_method(SVDConfig, svd)
