"""AV-DPO maths (model/dpo.py) on a tiny JavisDiT: no Ray, no files."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from model.dpo import DPOObjective, dpo_loss, draw_pair_noise, pair_errors
from model.javisdit import JavisDiT
from model.presets import tiny


def _pair_batch(seed: int = 0, batch_size: int = 2) -> dict:
    spec, gen = tiny().dit.latents, torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    return {"video_w": randn(batch_size, 4, 4, 6, 8), "audio_w": randn(batch_size, 8, 48, 16),
            "video_l": randn(batch_size, 4, 4, 6, 8), "audio_l": randn(batch_size, 8, 48, 16),
            "text": randn(batch_size, spec.text_len, spec.text_dim),
            "text_mask": torch.arange(spec.text_len)[None].repeat(batch_size, 1) < 5, "ids": ["p0", "p1"][:batch_size]}


@pytest.fixture(scope="module")
def policy() -> JavisDiT:
    torch.manual_seed(0)
    return JavisDiT(tiny().dit)


def test_the_margin_is_minus_half_beta_times_the_difference_of_improvements():
    # policy beats the reference by 0.2 on the winner and loses by 0.1 on the loser
    loss, z = dpo_loss(torch.tensor([0.8]), torch.tensor([1.1]), torch.tensor([1.0]), torch.tensor([1.0]), beta=10.0)
    assert z.item() == pytest.approx(-0.5 * 10.0 * ((0.8 - 1.0) - (1.1 - 1.0)))  # = 1.5
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.5)))


def test_the_gradient_pushes_the_winner_error_down_and_the_loser_error_up():
    err_w, err_l = torch.tensor([1.0], requires_grad=True), torch.tensor([1.0], requires_grad=True)
    loss, _ = dpo_loss(err_w, err_l, torch.tensor([1.0]), torch.tensor([1.0]), beta=100.0)
    loss.backward()
    assert err_w.grad.item() > 0 and err_l.grad.item() < 0  # descent lowers e_w, raises e_l
    assert err_w.grad.item() == pytest.approx(-err_l.grad.item())


def test_the_loss_is_log_2_and_the_margin_0_when_policy_equals_reference(policy):
    objective = DPOObjective(policy, copy.deepcopy(policy), beta=5000.0)
    out = objective(_pair_batch(), torch.Generator().manual_seed(1))
    assert out["loss"].item() == pytest.approx(math.log(2.0), abs=1e-6) and out["margin"].item() == 0.0
    assert objective.margin([_pair_batch(2)], torch.device("cpu"), draws=2) == 0.0
    assert not any(p.requires_grad for p in objective.reference.parameters())


def test_winner_and_loser_share_timestep_and_noise(policy):
    batch = _pair_batch()
    same = {**batch, "video_l": batch["video_w"], "audio_l": batch["audio_w"]}
    err_w, err_l = pair_errors(policy, same, draw_pair_noise(same, torch.Generator().manual_seed(3)))
    assert torch.allclose(err_w, err_l)  # identical candidates, identical draws -> identical errors


def test_a_few_steps_raise_the_margin_on_the_training_pairs(policy):
    dit = copy.deepcopy(policy)
    objective = DPOObjective(dit, copy.deepcopy(policy), beta=500.0)
    params = [p for p in dit.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    batch, gen = _pair_batch(), torch.Generator().manual_seed(4)
    before = objective.margin([batch], torch.device("cpu"), draws=2)
    objective.train()
    assert not objective.reference.training  # train() leaves the reference in eval mode
    for _ in range(5):
        optimizer.zero_grad()
        objective(batch, gen)["loss"].backward()
        optimizer.step()
    after = objective.margin([batch], torch.device("cpu"), draws=2)
    assert before == 0.0 and after > 0.0
    with pytest.raises(ValueError, match="beta"):
        DPOObjective(dit, policy, beta=0.0)
