"""JavisDiT++: Wan2.1 reproduced on the video path, shapes, stages, LoRA, checkpoints, the flow
helpers, and the paper sizes on the meta device."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from model import flow
from model.ditpp import (
    DITPP_STAGES,
    JavisDiTPP,
    ditpp_from_state_dict,
    ditpp_preset,
    freeze_for_ditpp_stage,
    is_audio_parameter,
    load_wan_transformer,
)
from model.lora import lora_parameters

B = 2


def _tiny(seed: int = 0, **changes) -> JavisDiTPP:
    torch.manual_seed(seed)
    return JavisDiTPP(dataclasses.replace(ditpp_preset("tiny"), **changes))


def _inputs(seed: int = 1, t_lat: int = 3, h: int = 8, w: int = 10, a_lat: int = 13):
    g = torch.Generator().manual_seed(seed)
    spec = ditpp_preset("tiny").latents
    video = torch.randn(B, spec.video_channels, t_lat, h, w, generator=g)
    audio = torch.randn(B, spec.audio_channels, a_lat, 16, generator=g)
    text = torch.randn(B, spec.text_len, spec.text_dim, generator=g)
    mask = torch.arange(spec.text_len)[None] < torch.tensor([[5], [9]])
    return video, audio, torch.rand(B, generator=g), text, mask


def _wan(seed: int = 0):
    """A tiny random diffusers Wan2.1 transformer of the tiny preset's sizes (non-zero everywhere)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    wan = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16,
                                out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2,
                                cross_attn_norm=True, eps=1e-6).eval()  # fmt: skip
    with torch.no_grad():
        for p in wan.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return wan


def test_video_path_reproduces_diffusers_wan21():
    wan, model = _wan(), _tiny().eval()
    info = load_wan_transformer(model, wan)
    assert info["not_loaded"] == ["audio_embed.bias", "audio_embed.weight", "audio_head.modulation",
                                  "audio_head.proj.bias", "audio_head.proj.weight", "null_text"]  # fmt: skip
    video, _, t, text, _ = _inputs()
    with torch.no_grad():
        ref = wan(video, t * 1000, text).sample  # diffusers: timestep in [0, 1000]
        ours, none = model(video, None, t, None, text, None, None, None)
        # per-frame timesteps: Wan2.2's per-token path with each frame's t repeated over its tokens
        t_frames = torch.rand(B, video.shape[2])
        ref_frames = wan(video, (t_frames * 1000).repeat_interleave(4 * 5, dim=1), text).sample
        ours_frames, _ = model(video, None, t_frames, None, text, None, None, None)
    assert none is None
    assert (ours - ref).abs().max() < 1e-5 and (ours_frames - ref_frames).abs().max() < 1e-5
    # each audio FFN starts as its block's video FFN
    block = model.blocks[1]
    assert torch.equal(block.audio_ffn[0].weight, block.video_ffn[0].weight)
    assert torch.equal(block.audio_ffn_modulation, block.modulation[3:])


def test_wan_loader_reads_a_local_folder_and_rejects_bad_sources(tmp_path):
    wan = _wan()
    wan.save_pretrained(tmp_path / "transformer")
    model = _tiny()
    load_wan_transformer(model, tmp_path)  # a diffusers pipeline folder: its transformer/
    assert torch.equal(model.video_embed.weight, wan.patch_embedding.weight)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_wan_transformer(_tiny(), tmp_path / "absent")
    with pytest.raises(ValueError, match="no counterpart"):
        load_wan_transformer(_tiny(), {**wan.state_dict(), "blocks.0.attn2.add_k_proj.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="cannot start from the video FFN"):
        load_wan_transformer(_tiny(audio_ffn_dim=128), wan)


def test_shapes_for_both_modalities_and_each_alone():
    model = _tiny()
    video, audio, t, text, mask = _inputs(t_lat=3, h=8, w=10, a_lat=13)  # odd audio length: padded, cropped
    v, a = model(video, audio, t, t, text, mask, None, None)
    assert v.shape == video.shape and a.shape == audio.shape
    v_only, none = model(video, None, t, None, text, mask, None, None)
    none2, a_only = model(None, audio, None, torch.rand(B, audio.shape[2]), text, mask, None, None)
    assert v_only.shape == video.shape and a_only.shape == audio.shape and none is None and none2 is None
    with pytest.raises(ValueError, match="no ST-Prior"):
        model(video, audio, t, t, text, mask, torch.zeros(B, 8, 16), None)
    with pytest.raises(ValueError, match="at least one"):
        model(None, None, t, t, text, mask, None, None)


def test_audio_and_video_attend_to_each_other_and_frames_can_be_conditions():
    model = _tiny().eval()
    video, audio, t, text, mask = _inputs()
    with torch.no_grad():
        v, a = model(video, audio, t, t, text, mask, None, None)
        v2, a2 = model(video, audio + 1.0, t, t, text, mask, None, None)
        cond = torch.zeros(B, video.shape[2], dtype=torch.bool)
        cond[:, 0] = True
        masked, _ = model(video, audio, t, t, text, mask, None, None, video_mask=cond)
        explicit_t = torch.where(cond, 0.0, t[:, None].expand(-1, video.shape[2]))
        explicit, _ = model(video, audio, explicit_t, t, text, mask, None, None)
    assert not torch.allclose(v, v2)  # shared self-attention: video reads audio
    assert torch.equal(masked, explicit)


def test_each_stage_trains_only_its_parameters():
    model = _tiny()
    video, audio, t, text, mask = _inputs()
    v, a = model(video, audio, t, t, text, mask, None, None)
    (v.square().mean() + a.square().mean()).backward()
    model.add_lora()
    for stage in DITPP_STAGES:
        model.zero_grad(set_to_none=True)
        trainable = {id(p) for p in freeze_for_ditpp_stage(model, stage)}
        if stage == "audio-pp":  # stage A runs audio-only
            _, a = model(None, audio, None, t, text, mask, None, None)
            a.square().mean().backward()
        else:
            with torch.no_grad():  # make the adapters non-trivial so every one gets a gradient
                for p in lora_parameters(model):
                    p.normal_(std=0.1)
            v, a = model(video, audio, t, t, text, mask, None, None)
            (v.square().mean() + a.square().mean()).backward()
        for name, p in model.named_parameters():
            if id(p) in trainable:
                assert p.grad is not None and p.grad.abs().sum() > 0, (stage, name)
            else:
                assert p.grad is None, (stage, name)
        names = {n for n, p in model.named_parameters() if id(p) in trainable}
        if stage == "audio-pp":
            assert names == {n for n, _ in model.named_parameters() if is_audio_parameter(n) and "lora" not in n}
            assert any(".audio_ffn." in n for n in names) and "audio_head.proj.weight" in names
        else:
            assert names and all(".lora_" in n for n in names)
    with pytest.raises(ValueError, match="add_lora"):
        freeze_for_ditpp_stage(_tiny(), "sft")
    with pytest.raises(ValueError, match="unknown stage"):
        freeze_for_ditpp_stage(model, "video")


def test_lora_starts_as_a_no_op_and_checkpoints_round_trip():
    model = _tiny().eval()
    video, audio, t, text, mask = _inputs()
    with torch.no_grad():
        before = model(video, audio, t, t, text, mask, None, None)
        adapted = model.add_lora()
        after = model(video, audio, t, t, text, mask, None, None)
        assert len(adapted) == 2 * 8 and all(torch.equal(x, y) for x, y in zip(before, after))
        for p in lora_parameters(model):
            p.normal_(std=0.1)
        model.set_null_text(torch.randn(16, 32))
        expected = model(video, audio, t, t, text, mask, None, None)
        loaded = ditpp_from_state_dict(model.config, model.state_dict()).eval()
        got = loaded(video, audio, t, t, text, mask, None, None)
        plain = ditpp_from_state_dict(model.config, _tiny(seed=3).state_dict())  # no adapter keys: no LoRA
    assert all(torch.equal(x, y) for x, y in zip(expected, got))
    assert not lora_parameters(plain)


def test_cond_drop_swaps_in_the_null_text_and_cfg_combines_two_passes():
    model = _tiny().eval()
    video, audio, t, text, mask = _inputs()
    with torch.no_grad():
        model.set_null_text(torch.randn(16, 32))
        drop = torch.tensor([True, False])
        v, _ = model(video, audio, t, t, text, mask, None, None, cond_drop=drop)
        v_text, _ = model(video, audio, t, t, text, mask, None, None)
        other_text, _ = model(video, audio, t, t, torch.randn_like(text), mask, None, None, cond_drop=drop)
        guided, _ = model.forward_with_cfg(video, audio, t, t, text, mask, None, None, cfg_scale=3.0)
        uncond, _ = model(video, audio, t, t, text, mask, None, None, cond_drop=torch.ones(B, dtype=torch.bool))
    assert torch.allclose(v[1], v_text[1], atol=1e-6) and not torch.allclose(v[0], v_text[0])
    assert torch.allclose(other_text[0], v[0], atol=1e-6)  # a dropped sample ignores its text
    assert torch.allclose(guided, uncond + 3.0 * (v_text - uncond), atol=1e-5)
    assert model.draw_cond_drop(10_000, generator=torch.Generator().manual_seed(0)).float().mean().item() == \
        pytest.approx(0.1, abs=0.02)


def test_flow_training_loss_and_sample_run_unchanged():
    model = _tiny()
    video, audio, _, text, mask = _inputs()
    g = torch.Generator().manual_seed(0)
    losses = flow.training_loss(model, video, audio, text, mask, None, None, cond_drop=model.draw_cond_drop(B),
                                generator=g)  # fmt: skip
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and losses["loss_video"] > 0 and losses["loss_audio"] > 0
    audio_only = flow.training_loss(model, None, audio, text, mask, None, None, generator=g)
    assert audio_only["loss_video"] == 0
    out_v, out_a = flow.sample(model.eval(), text, mask, None, None, video_shape=tuple(video.shape),
                               audio_shape=tuple(audio.shape), num_steps=2, cfg_scale=2.0, generator=g)  # fmt: skip
    assert out_v.shape == video.shape and out_a.shape == audio.shape and torch.isfinite(out_v).all()


def test_paper_sizes_on_the_meta_device():
    config = ditpp_preset("paper")
    assert (config.hidden_size, config.num_heads, config.depth, config.ffn_dim) == (1536, 12, 30, 8960)
    with torch.device("meta"):
        model = JavisDiTPP(config)
        spec = config.latents
        video = torch.zeros(1, 16, spec.video_latent_frames(81), 480 // 8, 832 // 8)  # (1, 16, 21, 60, 104)
        audio = torch.zeros(1, 8, 127, 16)  # 5.06 s of AudioLDM2 latents
        v, a = model(video, audio, torch.zeros(1), torch.zeros(1), torch.zeros(1, 512, 4096), None, None, None)
    assert v.shape == video.shape and a.shape == audio.shape
    total = sum(p.numel() for p in model.parameters())
    assert total == 2_247_403_616  # 2.09 * 1024**3: the explainer's "about 2.1B"


def test_params_command_for_ditpp():
    from click.testing import CliRunner

    from model.params import count_parameters
    from pipeline.cli import main

    result = CliRunner().invoke(main, ["params", "ditpp", "--preset", "paper"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert set(count_parameters("dit", "tiny")) - {"video_branch", "audio_branch"} <= set(out)
    assert out["wan_backbone"] == 1_418_996_800 and out["wan_backbone_paper_units"] == "1.32 B"
    assert out["video"] + out["audio"] + out["shared"] == out["total"]
    assert out["trainable_by_stage"]["audio-pp"] == out["audio"] and out["trainable_by_stage"]["sft"] == out["lora"]
    sft = CliRunner().invoke(main, ["params", "ditpp", "--preset", "tiny", "--stage", "sft"])
    assert json.loads(sft.output)["trainable"] == count_parameters("ditpp", "tiny")["lora"]
    bad = CliRunner().invoke(main, ["params", "ditpp", "--preset", "tiny", "--stage", "joint"])
    assert bad.exit_code != 0 and "audio-pp" in bad.output
