"""JavisDiT: shapes for both presets, tiny forward/backward, masks, CFG and the stage helpers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.javisdit import JavisDiT, freeze_for_stage, init_audio_from_video
from model.presets import dit_preset, prior_preset
from model.st_prior import STPriorEstimator

B = 2


def make_inputs(config, *, frames=3, height=7, width=10, audio_frames=18, seed=0):
    """Odd latent sizes on purpose: the patch embedding must pad and the output crop back."""
    g = torch.Generator().manual_seed(seed)
    spec = config.latents
    text_mask = torch.ones(B, spec.text_len, dtype=torch.bool)
    text_mask[0, spec.text_len // 2:] = False
    return {
        "video": torch.randn(B, spec.video_channels, frames, height, width, generator=g),
        "audio": torch.randn(B, spec.audio_channels, audio_frames, spec.audio_mel_bins // spec.audio_freq_stride,
                             generator=g),
        "t_video": torch.rand(B, generator=g),
        "t_audio": torch.rand(B, audio_frames, generator=g),
        "text": torch.randn(B, spec.text_len, spec.text_dim, generator=g),
        "text_mask": text_mask,
        "prior_spatial": torch.randn(B, config.num_spatial_priors, config.prior_dim, generator=g),
        "prior_temporal": torch.randn(B, config.num_temporal_priors, config.prior_dim, generator=g),
    }


def run(model, inputs, **kwargs):
    keys = ("video", "audio", "t_video", "t_audio", "text", "text_mask", "prior_spatial", "prior_temporal")
    return model(*(inputs[k] for k in keys), **kwargs)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return JavisDiT(dit_preset("tiny"))


def test_tiny_forward_backward_shapes(tiny):
    inputs = make_inputs(tiny.config)
    v, a = run(tiny, inputs)
    assert v.shape == inputs["video"].shape and a.shape == inputs["audio"].shape
    (v.pow(2).mean() + a.pow(2).mean()).backward()
    missing = [n for n, p in tiny.named_parameters() if p.grad is None]
    assert all(n.endswith(".null") for n in missing)  # nulls are only used under cond_drop
    assert all(torch.isfinite(p.grad).all() for p in tiny.parameters() if p.grad is not None)


def test_paper_shapes_on_meta_device():
    config = dit_preset("paper")
    with torch.device("meta"):
        model = JavisDiT(config)
        inputs = make_inputs(config, frames=8, height=30, width=40, audio_frames=100)
        v, a = run(model, inputs)
    assert (config.hidden_size, config.num_heads, config.depth) == (1152, 16, 28)
    assert v.shape == inputs["video"].shape and a.shape == inputs["audio"].shape


def test_tiny_builds_from_estimator_output(tiny):
    estimator = STPriorEstimator(prior_preset("tiny"))
    spec = tiny.config.latents
    prior = estimator(torch.randn(B, spec.prior_text_len, spec.prior_text_dim))
    inputs = make_inputs(tiny.config) | {"prior_spatial": prior.spatial, "prior_temporal": prior.temporal}
    v, _ = run(tiny, inputs)
    v.sum().backward()
    assert estimator.queries.grad is not None  # the DiT consumes the estimator's tokens as they come


def test_single_branch_pass(tiny):
    inputs = make_inputs(tiny.config) | {"video": None, "prior_spatial": None, "prior_temporal": None}
    v, a = run(tiny, inputs)
    assert v is None and a.shape == make_inputs(tiny.config)["audio"].shape
    with pytest.raises(ValueError):
        run(tiny, make_inputs(tiny.config) | {"prior_temporal": None})


def test_condition_mask_means_timestep_zero(tiny):
    inputs = make_inputs(tiny.config)
    mask = torch.zeros(B, 3, dtype=torch.bool)
    mask[:, 0] = True
    v_masked, a_masked = run(tiny, inputs, video_mask=mask)
    per_frame = inputs["t_video"][:, None].repeat(1, 3)
    per_frame[:, 0] = 0.0
    v_zero, a_zero = run(tiny, inputs | {"t_video": per_frame})
    torch.testing.assert_close(v_masked, v_zero)
    torch.testing.assert_close(a_masked, a_zero)
    v_plain, _ = run(tiny, inputs)
    assert not torch.allclose(v_plain, v_masked)  # the timestep really reaches the model


def test_text_padding_is_ignored(tiny):
    inputs = make_inputs(tiny.config)
    changed = inputs["text"].clone()
    changed[0, ~inputs["text_mask"][0]] = 100.0
    torch.testing.assert_close(run(tiny, inputs), run(tiny, inputs | {"text": changed}))


def test_cond_drop_replaces_text_and_prior(tiny):
    a, b = make_inputs(tiny.config, seed=1), make_inputs(tiny.config, seed=2)
    mixed = a | {k: b[k] for k in ("text", "text_mask", "prior_spatial", "prior_temporal")}
    drop = torch.ones(B, dtype=torch.bool)
    torch.testing.assert_close(run(tiny, a, cond_drop=drop), run(tiny, mixed, cond_drop=drop))
    assert not torch.allclose(run(tiny, a)[0], run(tiny, mixed)[0])


def _randomise(model):
    """Break the zero-initialised gates so every path influences the output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gate_" in name or "prior_attn.proj" in name:
                p.normal_(0, 0.1)


def test_cfg_scale_one_is_conditional_and_zero_unconditional(tiny):
    _randomise(tiny)
    inputs = make_inputs(tiny.config)
    keys = ("video", "audio", "t_video", "t_audio", "text", "text_mask", "prior_spatial", "prior_temporal")
    args = [inputs[k] for k in keys]
    cond = tiny(*args)
    uncond = tiny(*args, cond_drop=torch.ones(B, dtype=torch.bool))
    for got, want in zip(tiny.forward_with_cfg(*args, cfg_scale=1.0), cond):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    for got, want in zip(tiny.forward_with_cfg(*args, cfg_scale=0.0), uncond):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    for got, c, u in zip(tiny.forward_with_cfg(*args, cfg_scale=7.0), cond, uncond):
        torch.testing.assert_close(got, u + 7.0 * (c - u), rtol=1e-4, atol=1e-4)


def test_fused_and_explicit_attention_agree():
    torch.manual_seed(0)
    fused = JavisDiT(dit_preset("tiny"))
    _randomise(fused)
    explicit = JavisDiT(dataclasses.replace(dit_preset("tiny"), fused_attention=False))
    explicit.load_state_dict(fused.state_dict())
    inputs = make_inputs(fused.config)
    torch.testing.assert_close(run(fused, inputs), run(explicit, inputs), rtol=1e-4, atol=1e-5)


def test_gradient_checkpointing_matches():
    torch.manual_seed(0)
    plain = JavisDiT(dit_preset("tiny"))
    ckpt = JavisDiT(dataclasses.replace(dit_preset("tiny"), gradient_checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    inputs = make_inputs(plain.config)
    for model in (plain, ckpt):
        v, a = run(model, inputs)
        (v.square().mean() + a.square().mean()).backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_freeze_for_stage_groups(tiny):
    def trainable(stage):
        freeze_for_stage(tiny, stage)
        return [n for n, p in tiny.named_parameters() if p.requires_grad]

    joint = trainable("joint")
    assert joint and all("prior" in n or n.startswith("bi_attn.") for n in joint)
    assert any(".prior_attn." in n for n in joint) and any(n.startswith("bi_attn.") for n in joint)
    assert not any("self_attn" in n or "text_attn" in n or ".ffn." in n for n in joint)
    audio = trainable("audio")
    assert audio and all(n.startswith("audio.") and "prior" not in n for n in audio)
    assert any("self_attn" in n for n in audio) and any("final" in n for n in audio)
    video = trainable("video")
    assert any(n.startswith("t_block.") for n in video) and not any(n.startswith("audio.") for n in video)
    assert trainable("prior") == []
    returned = freeze_for_stage(tiny, "joint")
    assert sum(p.numel() for p in returned) == sum(p.numel() for p in tiny.parameters() if p.requires_grad)
    with pytest.raises(ValueError):
        freeze_for_stage(tiny, "pretrain")


def test_estimator_trains_only_in_prior_stage():
    estimator = STPriorEstimator(prior_preset("tiny"))
    assert freeze_for_stage(estimator, "joint") == []
    assert len(freeze_for_stage(estimator, "prior")) == len(list(estimator.parameters()))


def test_joint_step_leaves_frozen_weights_alone(tiny):
    _randomise(tiny)
    params = freeze_for_stage(tiny, "joint")
    before = {n: p.detach().clone() for n, p in tiny.named_parameters()}
    optimizer = torch.optim.SGD(params, lr=0.1)
    v, a = run(tiny, make_inputs(tiny.config))
    (v.square().mean() + a.square().mean()).backward()
    optimizer.step()
    changed = {n for n, p in tiny.named_parameters() if not torch.equal(p, before[n])}
    assert any(".prior_attn." in n for n in changed) and any(n.startswith("bi_attn.") for n in changed)
    assert all("prior" in n or n.startswith("bi_attn.") for n in changed)


def test_init_audio_from_video(tiny):
    copied = init_audio_from_video(tiny)
    block = "blocks.0.spatial"
    assert f"{block}.self_attn.qkv.weight" in copied and f"{block}.ffn.0.weight" in copied
    assert "text_proj.mlp.0.weight" in copied
    assert "patch_embed.weight" not in copied and not any("prior" in k for k in copied)
    torch.testing.assert_close(tiny.audio.blocks[1].temporal.self_attn.qkv.weight,
                               tiny.video.blocks[1].temporal.self_attn.qkv.weight)
    assert not torch.equal(tiny.audio.blocks[0].spatial.prior_attn.q.weight,
                           tiny.video.blocks[0].spatial.prior_attn.q.weight)


def test_draw_cond_drop_rate(tiny):
    drops = tiny.draw_cond_drop(20000, generator=torch.Generator().manual_seed(0))
    assert drops.dtype == torch.bool and abs(drops.float().mean().item() - tiny.config.cond_dropout_prob) < 0.01
