"""AV-DPO: Diffusion-DPO adapted to rectified flow, for joint audio-video preference pairs.

The objective is Diffusion-DPO (Wallace et al., "Diffusion Model Alignment Using Direct Preference
Optimization", CVPR 2024, eq. 14, and the constants of its released ``train.py``), with the
noise-prediction error replaced by the velocity error of rectified flow, as Flow-DPO does (Liu et
al., "Improving Video Generation with Human Feedback", arXiv 2501.13918, sec. 4, VideoAlign).
House time convention (``model/flow.py``): t = 0 data, t = 1 noise, target v = noise - data.

For a pair (winner ``w``, loser ``l``) of one prompt ``c``, one timestep ``t`` and ONE noise draw
``eps`` shared by both candidates (as Diffusion-DPO shares them: only the candidates differ)::

    x^k_t   = (1 - t) x^k + t eps,        v^k = eps - x^k                     k in {w, l}
    e_net^k = sum_m mean ||v^k_m - net(x^k_t, t, c)_m||^2     m in {video, audio}, net in {theta, ref}
    D^k     = e_theta^k - e_ref^k                     (how much better/worse than the reference)
    z       = -beta / 2 * (D^w - D^l)                 (the implicit reward margin of the pair)
    L       = -log sigmoid(z)

The paper writes ``-beta T omega(lambda_t)`` in front of the summed squared error; its code uses
per-element means and ``scale = -0.5 * beta_dpo`` with ``T omega`` absorbed into ``beta``, which
is what we do. Flow-DPO's derivation gives a timestep-dependent beta_t and reports that a
constant beta works better, so beta here is constant too.

Modalities: each modality's error is a mean over its own elements and the two are summed, so
video and audio weigh the same whatever their sizes, exactly as the SFT flow loss
(``loss_video + loss_audio``) weighs them; the margin is thus over the joint sample.

``z`` is 0 and ``L`` is log 2 when the policy equals the reference (the start of the stage).
``z > 0`` means the policy has moved toward the winner relative to the reference; its mean over
held-back pairs with fixed noise and timesteps (:meth:`DPOObjective.margin`) is the stage's
``margin_before`` / ``margin_after``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model.data import to_device
from model.flow import interpolate, sample_timesteps, velocity_target

# Diffusion-DPO's value for SD1.5 (2500 for SDXL). Its errors are per-element means of latents
# with unit-variance noise, as ours are, so the size of D^w - D^l, and with it the point where
# sigmoid saturates (the implicit KL leash), carries over. Lower it if the loss saturates early.
DEFAULT_BETA = 5000.0
MARGIN_DRAWS = 8  # fixed (t, noise) draws per held-back pair: the margin varies < 5% between seeds
MARGIN_SEED = 1234  # fixed: margin_before and margin_after see the same draws


def dpo_loss(err_policy_w: torch.Tensor, err_policy_l: torch.Tensor, err_ref_w: torch.Tensor,
             err_ref_l: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair errors ``(B,)`` -> ``(mean loss, margin z (B,))`` (module docstring)."""
    margin = -0.5 * beta * ((err_policy_w - err_ref_w) - (err_policy_l - err_ref_l))
    return -F.logsigmoid(margin).mean(), margin


def _per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)  # (B,)


def draw_pair_noise(batch: dict[str, Any], generator: torch.Generator | None,
                    t_mean: float = 0.0, t_std: float = 1.0) -> dict[str, torch.Tensor]:
    """One logit-normal timestep ``(B,)`` and one noise per modality, shared by winner and loser."""
    ref = batch["video_w"] if batch.get("video_w") is not None else batch["audio_w"]
    draws = {"t": sample_timesteps(ref.shape[0], mean=t_mean, std=t_std, generator=generator, device=ref.device)}
    for name in ("video", "audio"):
        x = batch.get(f"{name}_w")
        if x is not None:
            draws[name] = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return draws


def pair_errors(net: nn.Module, batch: dict[str, Any], draws: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(e^w (B,), e^l (B,))``: the summed per-modality velocity errors of ``net`` on both
    candidates, in one forward of the 2B stacked samples (winners first)."""
    t = draws["t"]
    inputs, targets, times = {}, {}, {}
    for name in ("video", "audio"):
        if name not in draws:
            continue
        x0 = torch.cat([batch[f"{name}_w"], batch[f"{name}_l"]])  # (2B, C, F, ...)
        noise = torch.cat([draws[name], draws[name]])
        times[name] = torch.cat([t, t])[:, None].expand(-1, x0.shape[2])  # (2B, F)
        inputs[name], targets[name] = interpolate(x0, noise, times[name]), velocity_target(x0, noise)
    text, mask = torch.cat([batch["text"], batch["text"]]), torch.cat([batch["text_mask"], batch["text_mask"]])
    preds = net(inputs.get("video"), inputs.get("audio"), times.get("video"), times.get("audio"), text, mask,
                None, None)  # fmt: skip
    err = sum(_per_sample_mse(pred, targets[name]) for name, pred in zip(("video", "audio"), preds) if name in targets)
    return err.chunk(2)


class DPOObjective(nn.Module):
    """AV-DPO: ``forward(batch, noise_gen, mask_gen) -> {"loss", "margin", "accuracy", "mse_w", "mse_l"}``.

    ``dit`` is the policy (its trainable parameters, LoRA in the dpo stage, are what the optimizer
    sees); ``reference`` a frozen copy of it, kept in eval mode and run without gradients. The
    batch is a preference batch (``model.data.collate_preference``): ``video_w``, ``audio_w``,
    ``video_l``, ``audio_l``, ``text``, ``text_mask``. No condition dropout: both networks must
    judge the pair under the same prompt.
    """

    def __init__(self, dit: nn.Module, reference: nn.Module, beta: float = DEFAULT_BETA) -> None:
        super().__init__()
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        self.dit, self.reference, self.beta = dit, reference, beta
        self.reference.requires_grad_(False)
        self.reference.eval()

    def train(self, mode: bool = True) -> DPOObjective:
        super().train(mode)
        self.reference.eval()  # the reference never trains, even inside a module set to train()
        return self

    def forward(self, batch: dict[str, Any], noise_gen: torch.Generator | None, mask_gen: Any = None):
        draws = draw_pair_noise(batch, noise_gen)
        err_w, err_l = pair_errors(self.dit, batch, draws)
        with torch.no_grad():
            ref_w, ref_l = pair_errors(self.reference, batch, draws)
        loss, margin = dpo_loss(err_w, err_l, ref_w, ref_l, self.beta)
        return {"loss": loss, "margin": margin.detach().mean(), "accuracy": (margin > 0).float().mean(),
                "mse_w": err_w.detach().mean(), "mse_l": err_l.detach().mean()}

    @torch.no_grad()
    def margin(self, batches: list[dict[str, Any]], device: torch.device, draws: int = MARGIN_DRAWS,
               seed: int = MARGIN_SEED) -> float:
        """Mean implicit reward margin ``z`` over ``batches`` of held-back pairs, each pair seen with
        ``draws`` fixed (t, noise) draws: the same numbers before and after training."""
        was_training = self.training
        self.eval()
        gen = torch.Generator(device=device).manual_seed(seed)
        total, count = 0.0, 0
        for _ in range(draws):
            for batch in batches:
                b = to_device(batch, device)
                noise = draw_pair_noise(b, gen)
                (err_w, err_l), (ref_w, ref_l) = pair_errors(self.dit, b, noise), pair_errors(self.reference, b, noise)
                _, z = dpo_loss(err_w, err_l, ref_w, ref_l, self.beta)
                total, count = total + float(z.sum()), count + z.numel()
        self.train(was_training)
        return total / max(count, 1)
