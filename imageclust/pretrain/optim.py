"""Optimisers by name for pretraining, and LARS (You et al. 2017), SimCLR's optimiser for large
batches. With LARS, as in SimCLR, biases and normalisation weights (every parameter of one
dimension) get neither weight decay nor adaptation."""

from __future__ import annotations

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step for each weight tensor is scaled by the trust ratio
    ``eta * ||w|| / ||grad + weight_decay * w||`` (You et al. 2017, algorithm 1). Parameter groups
    with ``adapt=False`` take plain SGD steps with momentum."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, adapt=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad.clone()
                if group["adapt"]:
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    trust = torch.where(
                        (w_norm > 0) & (u_norm > 0), group["eta"] * w_norm / u_norm, torch.ones_like(w_norm)
                    )
                    update.mul_(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = update
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def lars_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict]:
    """As SimCLR uses LARS: weights decayed and adapted; biases and normalisation parameters neither."""
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "adapt": False},
    ]


def build_optimizer(name: str, params: list[nn.Parameter], lr: float, weight_decay: float, momentum: float):
    """``pretrain.optimizer`` over the trainable ``params``."""
    if name == "lars":
        return LARS(lars_groups(params, weight_decay), lr=lr, momentum=momentum)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay)


OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "lars": LARS}
