"""Rectified flow: the time convention (t=0 data, t=1 noise, v = noise - data), the sampler, the loss."""

from __future__ import annotations

import pytest
import torch

from model import flow
from model.javisdit import JavisDiT
from model.presets import dit_preset


def test_interpolation_endpoints_and_per_frame_time():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 4, 3, 5, 6, generator=g), torch.randn(2, 4, 3, 5, 6, generator=g)
    torch.testing.assert_close(flow.interpolate(x0, noise, torch.zeros(2)), x0)
    torch.testing.assert_close(flow.interpolate(x0, noise, torch.ones(2)), noise)
    per_frame = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.25, 0.0]])
    xt = flow.interpolate(x0, noise, per_frame)
    torch.testing.assert_close(xt[0, :, 0], x0[0, :, 0])
    torch.testing.assert_close(xt[0, :, 2], noise[0, :, 2])
    torch.testing.assert_close(xt[1, :, 1], 0.75 * x0[1, :, 1] + 0.25 * noise[1, :, 1])
    with pytest.raises(ValueError):
        flow.interpolate(x0, noise, torch.zeros(2, 4))


def test_velocity_target_is_time_derivative():
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 8, 12, 16, generator=g), torch.randn(3, 8, 12, 16, generator=g)
    t, dt = torch.full((3,), 0.3), 1e-3
    finite = (flow.interpolate(x0, noise, t + dt) - flow.interpolate(x0, noise, t)) / dt
    torch.testing.assert_close(flow.velocity_target(x0, noise), noise - x0)
    torch.testing.assert_close(finite, flow.velocity_target(x0, noise), rtol=1e-3, atol=1e-3)


def _exact_velocity(data_video, data_audio):
    """For a single data point the flow's velocity is exact: v(x_t, t) = (x_t - x_0) / t."""

    def velocity(video, audio, t_video, t_audio):
        out = []
        for x, data, t in ((video, data_video, t_video), (audio, data_audio, t_audio)):
            tt = flow.expand_time(t, x)
            out.append(torch.where(tt > 0, (x - data) / tt.clamp_min(1e-12), torch.zeros_like(x)))
        return tuple(out)

    return velocity


def test_euler_with_exact_field_recovers_data():
    g = torch.Generator().manual_seed(2)
    data_v, data_a = torch.randn(2, 4, 3, 4, 4, generator=g), torch.randn(2, 8, 8, 16, generator=g)
    noise_v, noise_a = torch.randn(data_v.shape, generator=g), torch.randn(data_a.shape, generator=g)
    for steps, shift in ((30, 1.0), (7, 3.0)):
        video, audio = flow.euler_sample(_exact_velocity(data_v, data_a), noise_v, noise_a,
                                         num_steps=steps, shift=shift)
        torch.testing.assert_close(video, data_v, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(audio, data_a, rtol=1e-4, atol=1e-4)
    wrong_sign, _ = flow.euler_sample(lambda v, a, tv, ta: tuple(-x for x in _exact_velocity(data_v, data_a)(
        v, a, tv, ta)), noise_v, noise_a, num_steps=30)
    assert not torch.allclose(wrong_sign, data_v, atol=1e-2)  # the direction of integration matters


def test_euler_holds_conditioned_frames():
    g = torch.Generator().manual_seed(3)
    data_v, data_a = torch.randn(1, 4, 3, 4, 4, generator=g), torch.randn(1, 8, 8, 16, generator=g)
    cond_v = torch.randn(data_v.shape, generator=g)
    mask = torch.tensor([[True, False, False]])
    seen = []

    def velocity(video, audio, t_video, t_audio):
        seen.append(t_video.clone())
        torch.testing.assert_close(video[:, :, 0], cond_v[:, :, 0])
        return _exact_velocity(data_v, data_a)(video, audio, t_video, t_audio)

    video, _ = flow.euler_sample(velocity, torch.randn(data_v.shape, generator=g), torch.randn(data_a.shape),
                                 num_steps=5, video_cond=cond_v, video_cond_mask=mask)
    torch.testing.assert_close(video[:, :, 0], cond_v[:, :, 0])
    torch.testing.assert_close(video[:, :, 1:], data_v[:, :, 1:], rtol=1e-4, atol=1e-4)
    assert all(t[0, 0] == 0 and t[0, 1] > 0 for t in seen)


def test_logit_normal_timesteps():
    g = torch.Generator().manual_seed(4)
    t = flow.sample_timesteps(20000, generator=g)
    assert t.shape == (20000,) and (t > 0).all() and (t < 1).all()
    assert abs(t.median().item() - 0.5) < 0.02
    shifted = flow.sample_timesteps(20000, mean=1.0, generator=g)
    assert abs(shifted.median().item() - torch.sigmoid(torch.tensor(1.0)).item()) < 0.02


def test_timestep_shift():
    t = torch.linspace(0, 1, 11)
    torch.testing.assert_close(flow.shift_timesteps(t, 1.0), t)
    shifted = flow.shift_timesteps(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and (shifted[1:-1] > t[1:-1]).all()
    assert (shifted.diff() > 0).all()


def test_masked_loss_ignores_conditioned_frames():
    g = torch.Generator().manual_seed(5)
    pred = torch.randn(2, 4, 3, 2, 2, generator=g, requires_grad=True)
    target = torch.randn(2, 4, 3, 2, 2, generator=g)
    weight = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    loss = flow.flow_loss(pred, target, weight)
    manual = torch.cat([(pred[0, :, 1:] - target[0, :, 1:]).flatten(), (pred[1] - target[1]).flatten()])
    torch.testing.assert_close(loss, manual.pow(2).mean())
    loss.backward()
    assert (pred.grad[0, :, 0] == 0).all() and (pred.grad[0, :, 1] != 0).all()
    zero = flow.flow_loss(pred, target, torch.zeros(2, 3))
    assert zero.item() == 0.0 and zero.requires_grad
    torch.testing.assert_close(flow.flow_loss(pred, target), (pred - target).pow(2).mean())


def test_sample_with_tiny_model():
    torch.manual_seed(0)
    model = JavisDiT(dit_preset("tiny")).eval()
    spec = model.config.latents
    text, prior_s, prior_t = torch.randn(1, spec.text_len, spec.text_dim), torch.randn(1, 8, 16), torch.randn(1, 8, 16)
    cond = torch.randn(1, 8, 8, 16)
    kwargs = {"video_shape": (1, 4, 2, 4, 4), "audio_shape": (1, 8, 8, 16), "num_steps": 3, "cfg_scale": 7.0}
    video, audio = flow.sample(model, text, None, prior_s, prior_t, generator=torch.Generator().manual_seed(0),
                               audio_cond=cond, audio_cond_mask=torch.ones(1, 8, dtype=torch.bool), **kwargs)
    assert video.shape == (1, 4, 2, 4, 4) and torch.isfinite(video).all()
    torch.testing.assert_close(audio, cond)  # v2a-style: the given audio comes back untouched
    again, _ = flow.sample(model, text, None, prior_s, prior_t, generator=torch.Generator().manual_seed(0),
                           audio_cond=cond, audio_cond_mask=torch.ones(1, 8, dtype=torch.bool), **kwargs)
    torch.testing.assert_close(video, again)


def test_training_loss_masks_and_decreases():
    torch.manual_seed(0)
    model = JavisDiT(dit_preset("tiny"))
    spec = model.config.latents
    g = torch.Generator().manual_seed(1)
    video, audio = torch.randn(2, 4, 2, 4, 4, generator=g), torch.randn(2, 8, 8, 16, generator=g)
    cond = {"text": torch.randn(2, spec.text_len, spec.text_dim, generator=g), "text_mask": None,
            "prior_spatial": torch.randn(2, 8, 16, generator=g), "prior_temporal": torch.randn(2, 8, 16, generator=g)}
    v2a = flow.training_loss(model, video, audio, **cond, video_cond_mask=torch.ones(2, 2, dtype=torch.bool),
                             generator=torch.Generator().manual_seed(0))
    assert v2a["loss_video"].item() == 0.0 and v2a["loss_audio"].item() > 0
    audio_only = flow.training_loss(model, None, audio, **cond)
    assert audio_only["loss_video"].item() == 0.0 and audio_only["loss"].item() > 0

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(12):  # the same noise and timesteps every step: a deterministic objective to overfit
        losses = flow.training_loss(model, video, audio, **cond, generator=torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append(losses["loss"].item())
    assert history[-1] < 0.8 * history[0]
