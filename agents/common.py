"""Pieces shared by the MPO and TRPO agents: tensors, diagonal Gaussians, optimisers.

Notation: B batch, D action dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def as_float_tensor(value: np.ndarray | torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """Any array-like to a float32 tensor on `device`, without a copy where none is needed."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.float32)
    array = np.asarray(value, dtype=np.float32)
    return torch.from_numpy(array).to(device)


def diag_gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(log_std)^2) summed over the last dimension.

    Shapes: mean, log_std, x (..., D), broadcastable. Returns (..., 1).
    """
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - _HALF_LOG_2PI).sum(dim=-1, keepdim=True)


def diag_gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """Entropy of a diagonal Gaussian. log_std (..., D) -> (...)."""
    return (log_std + 0.5 + _HALF_LOG_2PI).sum(dim=-1)


def kl_diag_gaussian_per_dim(
    mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor
) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, one value per dimension (no sum). Shapes (..., D)."""
    var_ratio = torch.exp(2.0 * (log_std_p - log_std_q))
    mean_term = (mean_p - mean_q).pow(2) * torch.exp(-2.0 * log_std_q)
    return 0.5 * (var_ratio + mean_term - 1.0) + (log_std_q - log_std_p)


def build_optimizer(
    params: Iterable[nn.Parameter] | Iterable[dict],
    optimizer_type: str,
    lr: float,
    sgd_momentum: float,
    adam_eps: float = 1e-5,
) -> torch.optim.Optimizer:
    """Adam (eps `adam_eps`) or SGD with momentum. Any other name raises ValueError."""
    name = optimizer_type.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, eps=adam_eps)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=sgd_momentum)
    raise ValueError(f"unknown optimizer_type {optimizer_type!r}: expected 'adam' or 'sgd'")
