"""Reward backends on synthetic media with known orderings; production code paths on tiny random
models shaped like ImageBind and Audiobox Aesthetics."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from stages.rewards import (
    AUDIO_RATE_HZ,
    AudioboxAesthetics,
    AudioSignalQuality,
    Candidate,
    ImageBindSemantic,
    ImageBindSimilarity,
    RewardsConfig,
    build_rewards,
    load_audiobox,
    load_candidate,
    motion_reward,
)
from tests.stages.test_av_sync import flash_and_click_clip

SR = AUDIO_RATE_HZ


def cand(frames=None, audio=None, prompt="", fps=8.0) -> Candidate:
    frames = np.zeros((16, 64, 64, 3), np.uint8) if frames is None else frames
    audio = np.zeros(2 * SR, np.float32) if audio is None else audio
    return Candidate("c", prompt, frames, fps, audio.astype(np.float32))


def music(seconds: float = 2.0, level: float = 0.1) -> np.ndarray:
    """Notes with harmonics, changing every quarter second: tonal, audible, unclipped."""
    t = np.arange(int(seconds * SR)) / SR
    pitch = 220.0 * 2 ** (np.floor(t * 4) % 5 / 12)
    return level * sum(np.sin(2 * np.pi * h * pitch * t) / h for h in (1, 2, 3))


# --- audio_signal_quality ---------------------------------------------------------------------------


def test_audio_signal_quality_ranks_clean_above_silent_clipped_noisy_and_gappy():
    clean = music()
    rng = np.random.default_rng(0)
    noisy = 0.3 * rng.standard_normal(2 * SR)
    clipped = np.clip(clean * 20, -1, 1)
    gappy = clean * (np.arange(len(clean)) < 0.3 * len(clean))
    scores = [s.value for s in AudioSignalQuality().score([cand(audio=a) for a in (clean, np.zeros(2 * SR), clipped,
                                                                                     noisy, gappy)])]  # fmt: skip
    assert scores[0] > 8.0 and all(0.0 <= s < scores[0] - 2.0 for s in scores[1:])
    assert scores[1] == 0.0  # digital silence: no level at all


def test_audio_signal_quality_details_explain_the_defect():
    [clipped] = AudioSignalQuality().score([cand(audio=np.clip(music() * 20, -1, 1))])
    assert clipped.details["clipped_fraction"] > 0.1 and clipped.details["clipping"] == 0.0
    [noise] = AudioSignalQuality().score([cand(audio=0.3 * np.random.default_rng(1).standard_normal(SR))])
    assert 0.5 < noise.details["flatness"] < 0.65 and noise.details["tonality"] == 0.0  # white noise: ~0.56


# --- video ---------------------------------------------------------------------------------------------


def textured(n: int = 16, shift_px: int = 0, seed: int = 0) -> np.ndarray:
    """A colourful random texture, moved ``shift_px`` to the right each frame."""
    base = cv2.resize(np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8), (256, 192),
                      interpolation=cv2.INTER_NEAREST)  # fmt: skip
    return np.stack([np.roll(base, i * shift_px, axis=1)[:, :128][48:144] for i in range(n)])


def test_image_quality_reward_ranks_sharp_above_blurred():
    [reward] = [r for r in build_rewards(RewardsConfig(video=("image_quality",))) if r.name == "image_quality"]
    sharp = textured()
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 4) for f in sharp])
    scores = [s.value for s in reward.score([cand(sharp), cand(blurred)])]
    assert scores[0] > scores[1] + 2.0 and reward.modality == "video"


def test_motion_reward_is_zero_inside_the_band_and_minus_decades_outside():
    band = (0.003, 0.5)
    assert motion_reward(0.05, band) == 0.0
    assert motion_reward(0.0003, band) == pytest.approx(-1.0) and motion_reward(5.0, band) == pytest.approx(-1.0)
    assert motion_reward(0.0, band) == pytest.approx(-np.log10(0.003 / 1e-6))  # frozen: floored, finite


def test_optical_flow_reward_ranks_steady_motion_above_frozen():
    [reward] = [r for r in build_rewards(RewardsConfig(video=("optical_flow_motion",))) if r.name == "optical_flow_motion"]
    frozen, steady = textured(shift_px=0), textured(shift_px=2)  # 2 px/frame, 8 fps, 160 px diagonal: 0.1 diag/s
    scores = reward.score([cand(frozen), cand(steady)])
    assert scores[1].value == 0.0 and scores[0].value < -3.0
    assert scores[1].details["flow_mean"] == pytest.approx(0.1, rel=0.05) and scores[0].details["flow_mean"] == 0.0


# --- sync -----------------------------------------------------------------------------------------------


def test_av_align_reward_ranks_synced_above_shifted():
    [reward] = [r for r in build_rewards(RewardsConfig()) if r.modality == "sync"]
    synced, shifted = flash_and_click_clip(), flash_and_click_clip(shift_s=0.5)
    scores = reward.score([cand(*synced), cand(*shifted)])
    assert reward.name == "av_align" and scores[0].value > scores[1].value + 0.3
    assert scores[0].details["num_audio_peaks"] == 7


# --- semantic: the production code path on a tiny ImageBind-shaped model -----------------------------------

COLOURS = ("red", "green", "blue")


class ColourImageBind:
    """ImageBind's forward interface with a known answer: text -> one-hot of its colour word's
    token, vision -> one-hot of the dominant channel of the (normalised) frame, audio -> a fixed
    vector. Tokens are the colour's index + 1 (0 pads), as a tokenizer would give ids."""

    def __new__(cls):
        import torch

        class Module(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.unused = torch.nn.Linear(1, 1)  # a parameter, so .to(device) has something to move

            def forward(self, inputs: dict) -> dict:
                out = {}
                for key, x in inputs.items():
                    if key == "text":
                        out[key] = torch.nn.functional.one_hot(x[:, 0] - 1, 3).float()
                    elif key == "vision":
                        out[key] = torch.nn.functional.one_hot(x.mean(dim=(2, 3)).argmax(dim=1), 3).float()
                    else:
                        out[key] = torch.ones(x.shape[0], 3)
                return out

        return Module()


def colour_tokens(texts):
    import torch

    return torch.tensor([[next(i + 1 for i, c in enumerate(COLOURS) if c in t), 0] for t in texts])


def test_imagebind_similarity_ranks_the_prompts_colour_first():
    from stages.imagebind import ImageBindEmbedder

    semantic = ImageBindSemantic(ImageBindEmbedder(ColourImageBind(), "cpu", "colour-toy"), colour_tokens, 4)
    red, blue = np.zeros((8, 64, 64, 3), np.uint8), np.zeros((8, 64, 64, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    video = ImageBindSimilarity(semantic, "video")
    scores = video.score([cand(red, prompt="a red ball"), cand(blue, prompt="a red ball")])
    assert scores[0].value == pytest.approx(1.0) and scores[1].value == pytest.approx(0.0)
    assert video.name == "imagebind_text_video" and video.version == "imagebind_text_video/colour-toy"
    [audio] = ImageBindSimilarity(semantic, "audio").score([cand(red, music(5.0), prompt="a blue sea")])
    assert audio.value == pytest.approx(1 / np.sqrt(3))  # (0, 0, 1) against the unit (1, 1, 1)


def test_semantic_is_not_scored_without_a_backend_and_production_needs_weights():
    config = RewardsConfig()
    assert "semantic" not in config.scored_modalities and "ImageBind weights" in config.unscored()["semantic"]
    with pytest.raises(ValueError, match="imagebind_weights"):
        RewardsConfig(semantic=("imagebind_text_video",))
    with pytest.raises(ValueError, match="not a video reward"):
        RewardsConfig(video=("av_align",))
    assert RewardsConfig(weight_sync=0).unscored() == {"semantic": RewardsConfig().unscored()["semantic"],
                                                       "sync": "rewards.weight_sync is 0"}  # fmt: skip


# --- audiobox aesthetics: the production loader and inference on a tiny random WavLM ------------------------


@pytest.fixture
def tiny_audiobox(monkeypatch, tmp_path):
    """A checkpoint in the released layout (state_dict with a ``model.`` prefix, model_cfg,
    target_transform) of AesMultiOutput around a 2-layer, 32-wide WavLM."""
    aes = pytest.importorskip("audiobox_aesthetics.model.aes")
    import torch

    small = aes.WavLMConfig({**vars(aes.DEFAULT_AUDIO_CFG), "encoder_layers": 2, "encoder_embed_dim": 32,
                             "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 2, "conv_pos": 16,
                             "conv_pos_groups": 4, "num_buckets": 32, "max_distance": 80,
                             "conv_feature_layers": "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"})  # fmt: skip
    monkeypatch.setattr(aes, "DEFAULT_AUDIO_CFG", small)
    cfg = {"proj_num_layer": 1, "proj_ln": False, "proj_act_fn": "gelu", "proj_dropout": 0, "nth_layer": 3,
           "use_weighted_layer_sum": True, "precision": "32", "normalize_embed": True, "output_dim": 1}  # fmt: skip
    transform = {a: {"mean": 5.0 + i, "std": 2.0} for i, a in enumerate(("CE", "CU", "PC", "PQ"))}
    torch.manual_seed(0)
    model = aes.AesMultiOutput(**cfg, target_transform=transform)
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "model_cfg": cfg,
                "target_transform": transform}, path)  # fmt: skip
    return path


def test_audiobox_loads_the_released_layout_and_scores_weighted_windows(tiny_audiobox):
    reward = load_audiobox(str(tiny_audiobox), "cpu", ("CE", "CU", "PQ"))
    assert reward.version.startswith("audiobox_aesthetics/sha256:") and reward.modality == "audio"
    long, short = music(12.0), music(2.0)  # 12 s: a full 10 s window and a 2 s one weighted 0.2
    scores = reward.score([cand(audio=long), cand(audio=short)])
    for s in scores:
        assert set(s.details) == {"CE", "CU", "PC", "PQ"} and np.isfinite(s.value)
        assert s.value == pytest.approx(np.mean([s.details[a] for a in ("CE", "CU", "PQ")]))
    first, rest = reward.axis_scores(long[: 10 * SR]), reward.axis_scores(long[10 * SR :])
    weighted = (first["PQ"] * 1.0 + rest["PQ"] * 0.2) / 1.2
    assert scores[0].details["PQ"] == pytest.approx(weighted, rel=1e-4)


def test_audiobox_never_downloads():
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_audiobox("/nonexistent/checkpoint.pt", "cpu", ("PQ",))


@pytest.mark.gpu
@pytest.mark.skipif(not os.environ.get("JAVIS_AUDIOBOX_WEIGHTS"),
                    reason="needs the released Audiobox Aesthetics checkpoint.pt in $JAVIS_AUDIOBOX_WEIGHTS")  # fmt: skip
def test_audiobox_real_weights_rank_music_above_noise():
    reward = load_audiobox(os.environ["JAVIS_AUDIOBOX_WEIGHTS"], "cuda", ("PQ",))
    noise = 0.3 * np.random.default_rng(0).standard_normal(5 * SR)
    assert isinstance(reward, AudioboxAesthetics)
    clean, hiss = reward.score([cand(audio=music(5.0)), cand(audio=noise)])
    assert clean.value > hiss.value


# --- decoding a written candidate -----------------------------------------------------------------------------


def test_load_candidate_decodes_the_written_mp4(tmp_path):
    from model.sample import write_mp4

    frames, audio = textured(n=16, shift_px=2), music(2.0).astype(np.float32)
    path = write_mp4(tmp_path / "c.mp4", frames, 8.0, audio, SR)
    c = load_candidate(str(path), "c", "a prompt", RewardsConfig())  # AAC pads up to two 1024-sample frames
    assert c.frames.shape == (16, 96, 128, 3) and c.fps == 8.0 and c.prompt == "a prompt"
    assert 0 <= len(c.audio) - 2 * SR <= 2048 and np.abs(c.audio).max() > 0.1
