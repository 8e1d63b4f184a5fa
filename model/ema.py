"""Exponential moving average of the trained weights (DiT, SiT and OpenSora sample from the EMA).

``shadow <- decay * shadow + (1 - decay) * param`` after every optimizer step, kept in float32 on
the parameters' device, for the parameters a stage trains only (frozen ones never change, so their
average is themselves). Keys are the parameter names of the module given at construction.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Shadow copies of ``module``'s trainable parameters; ``update()`` after each step,
    ``copy_to(module)`` to load the averages, ``state_dict()`` / ``load_state_dict()`` for checkpoints."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {name: p.detach().float().clone() for name, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        for name, p in module.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach().float(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> list[str]:
        """Overwrite ``module``'s parameters that have a shadow; returns their names."""
        params = dict(module.named_parameters())
        for name, value in self.shadow.items():
            params[name].copy_(value.to(params[name].dtype))
        return sorted(self.shadow)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": {k: v.detach().cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} trained parameters, e.g. {sorted(missing)[:3]}")
        for name in self.shadow:
            self.shadow[name].copy_(state["shadow"][name])
