"""ST-Prior estimator, VA encoder and the contrastive losses of appendix C.2.3."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from model.presets import PriorLossWeights, prior_preset
from model.st_prior import (
    PriorOutput,
    STPriorEstimator,
    VAEmbedding,
    VAEncoder,
    discrepancy_loss,
    hinge_loss,
    kl_to_standard_normal,
    margin,
    prior_loss,
)


def text_inputs(config, batch=2, valid=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    spec = config.latents
    mask = torch.zeros(batch, spec.prior_text_len, dtype=torch.bool)
    mask[:, :valid] = True
    return torch.randn(batch, spec.prior_text_len, spec.prior_text_dim, generator=g), mask


def test_estimator_shapes_and_sampling():
    config = prior_preset("tiny")
    torch.manual_seed(0)
    estimator = STPriorEstimator(config)
    text, mask = text_inputs(config)
    out = estimator(text, mask)
    for name in ("spatial", "spatial_mean", "spatial_logvar"):
        assert getattr(out, name).shape == (2, config.num_spatial_tokens, config.prior_dim)
    for name in ("temporal", "temporal_mean", "temporal_logvar"):
        assert getattr(out, name).shape == (2, config.num_temporal_tokens, config.prior_dim)
    first = estimator.sample(text, mask, generator=torch.Generator().manual_seed(7))
    again = estimator.sample(text, mask, generator=torch.Generator().manual_seed(7))
    other = estimator.sample(text, mask, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(first.spatial, again.spatial)
    assert not torch.allclose(first.spatial, other.spatial)  # one caption, several plausible priors
    torch.testing.assert_close(first.spatial_mean, other.spatial_mean)
    assert not first.spatial.requires_grad


def test_estimator_ignores_padded_text():
    config = prior_preset("tiny")
    estimator = STPriorEstimator(config).eval()
    text, mask = text_inputs(config)
    changed = text.clone()
    changed[:, 10:] = 50.0
    a, b = estimator(text, mask), estimator(changed, mask)
    torch.testing.assert_close(a.temporal_mean, b.temporal_mean, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a.temporal_mean, estimator(changed).temporal_mean)


def test_paper_shapes_on_meta_device():
    config = prior_preset("paper")
    with torch.device("meta"):
        estimator, encoder = STPriorEstimator(config), VAEncoder(config)
        out = estimator(*text_inputs(config))
        emb = encoder(torch.randn(2, 4, 8, 30, 40), torch.randn(2, 8, 100, 16))
    assert out.spatial.shape == out.temporal.shape == (2, 32, 128)
    assert emb.spatial.shape == emb.temporal.shape == (2, 32, 128)


@pytest.mark.parametrize("video_shape,audio_shape", [((2, 4, 3, 8, 10), (2, 8, 20, 16)),
                                                     ((2, 4, 1, 5, 7), (2, 8, 9, 16))])
def test_va_encoder_shapes(video_shape, audio_shape):
    config = prior_preset("tiny")
    encoder = VAEncoder(config)
    emb = encoder(torch.randn(video_shape), torch.randn(audio_shape))
    assert emb.spatial.shape == (2, config.num_spatial_tokens, config.prior_dim)
    assert emb.temporal.shape == (2, config.num_temporal_tokens, config.prior_dim)


def test_temporal_embedding_sees_audio_timing():
    config = prior_preset("tiny")
    torch.manual_seed(0)
    encoder = VAEncoder(config).eval()
    video, audio = torch.randn(1, 4, 4, 8, 8), torch.randn(1, 8, 32, 16)
    shifted = torch.roll(audio, 12, dims=2)  # an audio-temporal negative
    assert not torch.allclose(encoder(video, audio).temporal, encoder(video, shifted).temporal)


def unit(*values):
    return F.normalize(torch.tensor(values, dtype=torch.float32), dim=-1)


def test_hinge_zero_once_margin_is_met():
    prior = unit(1, 0, 0).expand(1, 4, 3)
    pos = unit(1, 0, 0).expand(1, 4, 3)
    neg_far = unit(0, 1, 0).expand(1, 4, 3)  # cos 1 vs 0: gap 1 = margin
    assert hinge_loss(prior, pos, neg_far, 1.0).item() == 0.0
    assert hinge_loss(prior, pos, neg_far, 1.5).item() == pytest.approx(0.5)
    assert hinge_loss(prior, pos, pos, 1.0).item() == pytest.approx(1.0)  # negative as close as positive
    several = torch.stack([neg_far, unit(-1, 0, 0).expand(1, 4, 3)], dim=1)  # (B, K, N, D)
    assert hinge_loss(prior, pos, several, 1.0).item() == 0.0


def test_discrepancy_and_kl():
    pos = unit(1, 0).expand(2, 3, 2)
    assert discrepancy_loss(pos, -pos, -1.0).item() == 0.0
    assert discrepancy_loss(pos, pos, -1.0).item() == pytest.approx(2.0)
    zeros = torch.zeros(2, 3, 4)
    assert kl_to_standard_normal(zeros, zeros).item() == 0.0
    assert kl_to_standard_normal(zeros + 1, zeros).item() == pytest.approx(0.5 * 12)
    assert kl_to_standard_normal(zeros, zeros + 1).item() > 0


def _prior_from(spatial, temporal):
    zeros = torch.zeros_like
    return PriorOutput(spatial, temporal, spatial, zeros(spatial), temporal, zeros(temporal))


def test_prior_loss_terms_and_total():
    g = torch.Generator().manual_seed(0)
    config = prior_preset("tiny")
    shape = (2, config.num_spatial_tokens, config.prior_dim)
    pos = VAEmbedding(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    neg = VAEmbedding(torch.randn(shape, generator=g), torch.randn(shape, generator=g))
    encoder = VAEncoder(config)
    perfect = _prior_from(pos.spatial.clone(), pos.temporal.clone())
    weights = PriorLossWeights(hinge=2.0, disc=0.5, va=0.25, l2=3.0, kl=0.1)
    out = prior_loss(perfect, pos, neg, weights, discriminator=encoder.discriminator)
    assert out["l2"].item() == 0.0
    expected = sum(getattr(weights, k) * out[k] for k in ("hinge", "disc", "va", "l2", "kl"))
    torch.testing.assert_close(out["loss"], expected)
    assert margin(perfect, pos, neg).item() > 0.5
    assert margin(_prior_from(neg.spatial, neg.temporal), pos, neg).item() < -0.5
    with pytest.raises(ValueError):
        prior_loss(perfect, pos, neg, weights)
    no_disc = prior_loss(perfect, pos, neg, dataclasses.replace(weights, disc=0.0))
    assert no_disc["disc"].item() == 0.0


def test_short_training_prefers_positives():
    """A few steps of the full objective on synthetic clips (negatives: audio shifted in time)
    raise the positive-vs-negative margin on the training clips."""
    torch.manual_seed(0)
    config = prior_preset("tiny")
    estimator, encoder = STPriorEstimator(config), VAEncoder(config)
    text, mask = text_inputs(config, batch=4, seed=1)
    video, audio = torch.randn(4, 4, 4, 8, 8), torch.randn(4, 8, 32, 16)
    neg_audio = torch.roll(audio, 12, dims=2)
    params = list(estimator.parameters()) + list(encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)

    def evaluate():
        with torch.no_grad():
            return margin(estimator(text, mask), encoder(video, audio), encoder(video, neg_audio)).item()

    before = evaluate()
    for _ in range(40):
        losses = prior_loss(estimator(text, mask), encoder(video, audio), encoder(video, neg_audio), config.loss,
                            discriminator=encoder.discriminator)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    assert evaluate() > before + 0.1
