"""LoRA adapters: a no-op at first, idempotent, only adapters train, merge equals the adapter,
state-dict keys that round-trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.lora import LoRALinear, apply_lora, has_lora_keys, lora_parameters


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.ModuleDict({"q": nn.Linear(16, 16), "k": nn.Linear(16, 4)}))


def _run(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    h = net[1](net[0](x))
    return torch.cat([net[2]["q"](h), net[2]["k"](h)], dim=-1)


def test_fresh_adapter_is_a_no_op_and_applying_twice_changes_nothing():
    net, x = _net(), torch.randn(3, 8)
    before = _run(net, x)
    assert apply_lora(net, rank=2, alpha=4.0, target_suffixes=("q", "k")) == ["2.k", "2.q"]
    assert isinstance(net[2]["q"], LoRALinear) and net[2]["q"].scale == 2.0
    assert torch.equal(_run(net, x), before)
    adapters = lora_parameters(net)
    assert apply_lora(net, rank=2, alpha=4.0, target_suffixes=("q", "k")) == ["2.k", "2.q"]
    assert [id(p) for p in lora_parameters(net)] == [id(p) for p in adapters] and len(adapters) == 4


def test_only_adapters_get_gradients_and_merge_matches():
    net, x = _net(), torch.randn(3, 8)
    apply_lora(net, 2, 2.0, ("q",))
    layer = net[2]["q"]
    assert not layer.weight.requires_grad and layer.lora_a.requires_grad and layer.lora_b.requires_grad
    _run(net, x).sum().backward()
    assert layer.lora_b.grad is not None and layer.weight.grad is None
    with torch.no_grad():
        layer.lora_b.normal_()
    adapted = _run(net, x)
    layer.merge()
    assert torch.allclose(_run(net, x), adapted, atol=1e-5)
    layer.unmerge()
    assert torch.allclose(_run(net, x), adapted, atol=1e-5)


def test_state_dict_round_trip_and_base_keys_kept():
    net = _net()
    base_keys = set(net.state_dict())
    apply_lora(net, 2, 2.0, ("q",))
    with torch.no_grad():
        net[2]["q"].lora_b.normal_()
    saved = net.state_dict()
    assert set(saved) == base_keys | {"2.q.lora_a", "2.q.lora_b"} and has_lora_keys(saved)
    other = _net()
    apply_lora(other, 2, 2.0, ("q",))
    other.load_state_dict(saved, strict=True)
    x = torch.randn(2, 8)
    assert torch.equal(_run(other, x), _run(net, x))
    missing = _net()
    apply_lora(missing, 2, 2.0, ("q",))
    result = missing.load_state_dict(_net().state_dict(), strict=False)  # a base checkpoint
    assert sorted(result.missing_keys) == ["2.q.lora_a", "2.q.lora_b"] and not result.unexpected_keys


def test_bad_arguments():
    with pytest.raises(ValueError, match="no nn.Linear"):
        apply_lora(_net(), 2, 2.0, ("nothing",))
    with pytest.raises(ValueError, match="rank"):
        apply_lora(_net(), 0, 2.0, ("q",))
