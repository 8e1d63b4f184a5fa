"""Rectified flow for JavisDiT (appendix C.1: rectified flow, 30 Euler steps, CFG 7.0).

Time convention (the house convention, as minRF/SiT): t = 0 is data, t = 1 is noise,

    x_t = (1 - t) * x_0 + t * noise,        t in [0, 1]
    v   = d x_t / d t = noise - x_0          (the network's regression target)

and sampling integrates from t = 1 (pure noise) down to t = 0 (data): ``x <- x + (t_next - t) * v``
with ``t_next < t``. Timesteps are per latent frame, ``(B, F)``: video latents ``(B, C, F, H, W)``
and audio latents ``(B, C, F, M)`` both keep frames on axis 2, so a frame that is a clean
condition (``model/masking.py``) simply has t = 0, where ``x_t`` equals the data exactly. The
training loss is the mean squared velocity error over the frames that are generated.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

VelocityFn = Callable[..., tuple[torch.Tensor | None, torch.Tensor | None]]

FRAME_AXIS = 2  # latents are (B, C, frames, ...)


def expand_time(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast ``(B,)`` or per-frame ``(B, F)`` timesteps against a latent ``(B, C, F, ...)``."""
    if t.ndim == 1:
        return t.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    if t.shape[1] != x.shape[FRAME_AXIS]:
        raise ValueError(f"per-frame timesteps have {t.shape[1]} frames, latent has {x.shape[FRAME_AXIS]}")
    return t.view(t.shape[0], 1, t.shape[1], *([1] * (x.ndim - 3))).to(x.dtype)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The point ``x_t = (1 - t) x_0 + t noise`` on the straight path from data to noise."""
    tt = expand_time(t, x0)
    return (1 - tt) * x0 + tt * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def sample_timesteps(batch_size: int, *, mean: float = 0.0, std: float = 1.0,
                     generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Logit-normal timesteps ``sigmoid(N(mean, std^2))``, ``(B,)`` (SD3; OpenSora "logit-normal")."""
    return torch.sigmoid(mean + std * torch.randn(batch_size, generator=generator, device=device))


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Push timesteps toward noise for larger latents: ``shift t / (1 + (shift - 1) t)`` (1 = none)."""
    return shift * t / (1 + (shift - 1) * t)


def frame_timesteps(t: torch.Tensor, num_frames: int, cond_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(B,)`` timesteps -> ``(B, F)``, 0 where ``cond_mask (B, F)`` marks a conditioning frame."""
    tf = t[:, None].expand(-1, num_frames) if t.ndim == 1 else t
    return tf if cond_mask is None else torch.where(cond_mask.to(tf.device), torch.zeros_like(tf), tf)


def training_pair(x0: torch.Tensor, t: torch.Tensor, *, generator: torch.Generator | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw noise and return ``(x_t, velocity target)`` for data ``x0`` at timesteps ``t``."""
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return interpolate(x0, noise, t), velocity_target(x0, noise)


def flow_loss(pred: torch.Tensor, target: torch.Tensor, frame_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared velocity error, computed in float32. ``frame_weight (B, F)`` (bool or float)
    weights each latent frame; conditioning frames carry 0 and do not count. All-zero weight -> 0."""
    err = (pred.float() - target.float()).pow(2)
    if frame_weight is None:
        return err.mean()
    w = expand_time(frame_weight.float(), err).expand_as(err)
    total = w.sum()
    if total == 0:
        return (err * w).sum()  # zero, still attached to the graph
    return (err * w).sum() / total


def _impose(x: torch.Tensor | None, cond: torch.Tensor | None, mask: torch.Tensor | None):
    if x is None or cond is None or mask is None:
        return x
    return torch.where(expand_time(mask.float(), x) > 0, cond.to(x.dtype), x)


def euler_sample(velocity_fn: VelocityFn, video_noise: torch.Tensor | None, audio_noise: torch.Tensor | None, *,
                 num_steps: int = 30, shift: float = 1.0,
                 video_cond: torch.Tensor | None = None, video_cond_mask: torch.Tensor | None = None,
                 audio_cond: torch.Tensor | None = None, audio_cond_mask: torch.Tensor | None = None):
    """Integrate both latents from t = 1 to t = 0 together in ``num_steps`` Euler steps.

    ``velocity_fn(video, audio, t_video (B, Fv), t_audio (B, Fa)) -> (v_video, v_audio)``. Frames
    where ``*_cond_mask (B, F)`` is True are held at ``*_cond`` (clean latents) with t = 0 at every
    step. Either modality may be ``None`` (single-branch sampling). Returns ``(video, audio)``.
    """
    if num_steps < 1:
        raise ValueError("num_steps must be positive")
    ref = video_noise if video_noise is not None else audio_noise
    grid = shift_timesteps(torch.linspace(1.0, 0.0, num_steps + 1, device=ref.device), shift)
    video = _impose(video_noise, video_cond, video_cond_mask)
    audio = _impose(audio_noise, audio_cond, audio_cond_mask)
    b = ref.shape[0]
    for i in range(num_steps):
        t_now, dt = grid[i], grid[i + 1] - grid[i]  # dt < 0
        t_v = None if video is None else frame_timesteps(t_now.expand(b), video.shape[FRAME_AXIS], video_cond_mask)
        t_a = None if audio is None else frame_timesteps(t_now.expand(b), audio.shape[FRAME_AXIS], audio_cond_mask)
        v_video, v_audio = velocity_fn(video, audio, t_v, t_a)
        if video is not None:
            video = _impose(video + dt * v_video.to(video.dtype), video_cond, video_cond_mask)
        if audio is not None:
            audio = _impose(audio + dt * v_audio.to(audio.dtype), audio_cond, audio_cond_mask)
    return video, audio


@torch.no_grad()
def sample(model, text: torch.Tensor, text_mask: torch.Tensor | None, prior_spatial: torch.Tensor | None,
           prior_temporal: torch.Tensor | None, *, video_shape: tuple[int, ...] | None,
           audio_shape: tuple[int, ...] | None, num_steps: int = 30, cfg_scale: float = 7.0, shift: float = 1.0,
           generator: torch.Generator | None = None, video_cond: torch.Tensor | None = None,
           video_cond_mask: torch.Tensor | None = None, audio_cond: torch.Tensor | None = None,
           audio_cond_mask: torch.Tensor | None = None):
    """Text (+ priors, + optional clean frames) -> ``(video, audio)`` latents with a JavisDiT and CFG.

    ``model`` is a :class:`model.javisdit.JavisDiT` (anything with its ``forward_with_cfg``);
    ``video_shape`` ``(B, Cv, T, H, W)`` / ``audio_shape`` ``(B, Ca, A, F)``, either may be ``None``.
    """
    device = text.device
    dtype = next(model.parameters()).dtype

    def noise(shape):
        if shape is None:
            return None
        return torch.randn(shape, generator=generator, device=device).to(dtype)

    def velocity(video, audio, t_video, t_audio):
        return model.forward_with_cfg(video, audio, t_video, t_audio, text, text_mask, prior_spatial,
                                      prior_temporal, cfg_scale=cfg_scale)

    return euler_sample(velocity, noise(video_shape), noise(audio_shape), num_steps=num_steps, shift=shift,
                        video_cond=video_cond, video_cond_mask=video_cond_mask,
                        audio_cond=audio_cond, audio_cond_mask=audio_cond_mask)



def training_loss(model, video: torch.Tensor | None, audio: torch.Tensor | None, text: torch.Tensor,
                  text_mask: torch.Tensor | None, prior_spatial: torch.Tensor | None,
                  prior_temporal: torch.Tensor | None, *, video_cond_mask: torch.Tensor | None = None,
                  audio_cond_mask: torch.Tensor | None = None, cond_drop: torch.Tensor | None = None,
                  t_mean: float = 0.0, t_std: float = 1.0, shift: float = 1.0,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One rectified-flow training objective for clean latents ``video``/``audio`` (either ``None``).

    Draws one logit-normal timestep per sample (shared by both modalities, as they are sampled
    together), sets it to 0 on conditioned frames (``*_cond_mask (B, F)``, ``model/masking.py``),
    noises the latents, runs ``model`` (a JavisDiT) and returns ``{"loss", "loss_video",
    "loss_audio"}``: masked velocity MSEs and their sum (a missing modality contributes 0).
    """
    ref = video if video is not None else audio
    t = shift_timesteps(sample_timesteps(ref.shape[0], mean=t_mean, std=t_std, generator=generator,
                                         device=ref.device), shift)
    inputs, targets, weights, times = {}, {}, {}, {}
    for name, x0, mask in (("video", video, video_cond_mask), ("audio", audio, audio_cond_mask)):
        if x0 is None:
            continue
        times[name] = frame_timesteps(t, x0.shape[FRAME_AXIS], mask)
        inputs[name], targets[name] = training_pair(x0, times[name], generator=generator)
        weights[name] = None if mask is None else (~mask.bool()).float()
    preds = model(inputs.get("video"), inputs.get("audio"), times.get("video"), times.get("audio"), text,
                  text_mask, prior_spatial, prior_temporal, cond_drop=cond_drop)
    losses = {}
    for name, pred in zip(("video", "audio"), preds):
        losses[f"loss_{name}"] = (flow_loss(pred, targets[name], weights[name]) if name in targets
                                  else torch.zeros((), device=ref.device))
    return {"loss": losses["loss_video"] + losses["loss_audio"], **losses}
