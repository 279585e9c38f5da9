"""Small helpers shared by the modules that run models on text ([`texts`], [`evaluation`], [`calibration`])."""

from typing import Any

import torch


def check_positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    """Raises a `ValueError` naming `name` unless `value` is a positive `int` (or `None` when `allow_none`).

    Args:
        name (`str`): Argument name, quoted in the error message.
        value (`Any`): Value to check; `bool` is rejected even though it is an `int` subclass.
        allow_none (`bool`, *optional*, defaults to `False`): Whether `None` is accepted.
    """
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        allowed = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"`{name}` must be {allowed}, got {value!r}.")


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of `model`: its `device` attribute when it is a `torch.device`, else that of its first parameter.

    Args:
        model (`torch.nn.Module`): Any module (a model without parameters is on the CPU).

    Returns:
        `torch.device`
    """
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")
