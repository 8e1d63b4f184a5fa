"""Low-rank adapters (LoRA, Hu et al. 2021) for ``nn.Linear`` layers, without peft.

``y = x W^T + b + (alpha / rank) * x A^T B^T`` with the base ``W, b`` frozen, ``A (rank, in)``
Kaiming-uniform (as nn.Linear's own init) and ``B (out, rank)`` zero, so a freshly applied adapter
is an exact no-op. :class:`LoRALinear` *is* an ``nn.Linear`` that keeps the wrapped layer's own
``weight`` and ``bias`` parameters, so a module's state-dict keys only gain ``<layer>.lora_a`` and
``<layer>.lora_b``: a model with LoRA loads a checkpoint saved with LoRA strictly, and a base
checkpoint with ``strict=False`` (only the adapter keys missing).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

LORA_MARKER = "lora_"  # every adapter parameter name contains it


class LoRALinear(nn.Linear):
    """An ``nn.Linear`` plus a rank-``rank`` adapter scaled by ``alpha / rank``. Input/output as
    the base layer. :meth:`merge` folds the adapter into ``weight`` (e.g. for export) and
    :meth:`unmerge` takes it out again."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        nn.Module.__init__(self)  # not nn.Linear.__init__: the base layer's parameters are adopted
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, **factory))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.merged:
            return out
        return out + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.weight += (self.lora_b @ self.lora_a) * self.scale
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.weight -= (self.lora_b @ self.lora_a) * self.scale
            self.merged = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha}"


def apply_lora(module: nn.Module, rank: int, alpha: float, target_suffixes: Iterable[str]) -> list[str]:
    """Replace every ``nn.Linear`` of ``module`` whose qualified name ends with one of
    ``target_suffixes`` by a :class:`LoRALinear`; returns the names of the adapted layers (sorted),
    including those adapted by an earlier call: applying twice changes nothing."""
    suffixes = tuple(target_suffixes)
    if not suffixes:
        raise ValueError("target_suffixes is empty: no layer would get an adapter")
    adapted = []
    for name, child in list(module.named_modules()):
        if not isinstance(child, nn.Linear) or not name.endswith(suffixes):
            continue
        adapted.append(name)
        if isinstance(child, LoRALinear):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, LoRALinear(child, rank, alpha))
    if not adapted:
        raise ValueError(f"no nn.Linear in the module ends with any of {suffixes}")
    return sorted(adapted)


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters (``lora_a``, ``lora_b``) of every :class:`LoRALinear` in ``module``."""
    return [p for name, p in module.named_parameters() if LORA_MARKER in name.rpartition(".")[2]]


def has_lora_keys(state_dict: dict[str, torch.Tensor]) -> bool:
    return any(LORA_MARKER in key.rpartition(".")[2] for key in state_dict)
