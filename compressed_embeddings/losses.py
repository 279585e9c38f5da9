"""Reconstruction losses for embedding rows: pure tensor functions.

The paper's loss weighs the direction of each reconstructed row far above its distance:
`cosine_weight * mean(1 - cos) + l1_weight * mean((|x_hat - x| + 1e-10) ** p) + rmse_weight * rmse`.
"""

import torch
from torch.nn import functional as F


def cosine_distance(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Mean over rows of `1 - cos(reconstructed_i, original_i)`."""
    return (1.0 - F.cosine_similarity(reconstructed, original, dim=-1, eps=1e-8)).mean()


def powered_l1(reconstructed: torch.Tensor, original: torch.Tensor, power: float) -> torch.Tensor:
    """The paper's "powered L1": `mean((|x_hat - x| + 1e-10) ** power)`; small powers reward many exact entries."""
    return ((reconstructed - original).abs() + 1e-10).pow(power).mean()


def rmse(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Root of the mean squared error over all entries."""
    return F.mse_loss(reconstructed, original).sqrt()


def direction_loss(
    reconstructed: torch.Tensor,
    original: torch.Tensor,
    *,
    cosine_weight: float = 0.1995,
    l1_weight: float = 0.0025,
    rmse_weight: float = 0.0,
    power: float = 1.0,
) -> torch.Tensor:
    """The direction-aware loss of "Direction is what you need" (defaults: the published weights).

    Example:

    ```python
    >>> import torch
    >>> x = torch.randn(4, 8)
    >>> float(direction_loss(x, x)) < 1e-6
    True
    ```
    """
    loss = reconstructed.new_zeros(())
    if cosine_weight:
        loss = loss + cosine_weight * cosine_distance(reconstructed, original)
    if l1_weight:
        loss = loss + l1_weight * powered_l1(reconstructed, original, power)
    if rmse_weight:
        loss = loss + rmse_weight * rmse(reconstructed, original)
    return loss


def l1_power(epoch: int, start: float = 1.0, end: float = 0.1, decay_epochs: int = 20) -> float:
    """The paper's schedule of the L1 power: linear from `start` to `end` over `decay_epochs`, then `end`."""
    if decay_epochs <= 0:
        return end
    return start + (end - start) * min(epoch / decay_epochs, 1.0)
