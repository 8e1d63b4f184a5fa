"""TA-RoPE: the ids on a known case, no audio-video id collisions, the relative-time property, and
Wan2.1's own 3-D RoPE reproduced for video ids."""

from __future__ import annotations

import pytest
import torch

from model.spec import DITPP_PAPER, DITPP_TINY
from model.ta_rope import (
    apply_rope,
    audio_position_ids,
    audio_token_spans_s,
    rope_angles,
    rope_dims,
    video_latent_frame_spans_s,
    video_position_ids,
)


def test_head_split_is_wans():
    assert rope_dims(128) == (44, 42, 42)  # Wan2.1-1.3B: 12 heads of 128
    assert rope_dims(16) == (8, 4, 4)
    with pytest.raises(ValueError):
        rope_dims(5)


def test_spans_of_wan_latent_frames_and_audio_tokens():
    # 8 fps: latent 0 = frame 0 alone, latent k = frames 4k-3..4k
    spans = video_latent_frame_spans_s(DITPP_TINY, 3)
    assert spans.tolist() == [[0.0, 0.125], [0.125, 0.625], [0.625, 1.125]]
    assert video_latent_frame_spans_s(DITPP_TINY, 3, patch_t=2).tolist() == [[0.0, 0.625], [0.625, 1.125]]
    # AudioLDM2: a latent frame is 4 mel hops of 10 ms; a (4, 1) token row is 160 ms
    assert torch.allclose(audio_token_spans_s(DITPP_PAPER, 3, 4), torch.tensor([[0.0, 0.16], [0.16, 0.32], [0.32, 0.48]],
                                                                              dtype=torch.float64))  # fmt: skip


def test_audio_ids_on_a_known_case():
    video = video_latent_frame_spans_s(DITPP_TINY, 3)  # [0, .125) [.125, .625) [.625, 1.125)
    audio = audio_token_spans_s(DITPP_TINY, 8, 4)  # centres .08 .24 .40 .56 .72 .88 1.04 1.20
    ids = audio_position_ids(8 * 2, audio, video, h_offset=4, w_offset=5).view(8, 2, 3)
    assert ids[:, 0, 0].tolist() == [0, 1, 1, 1, 2, 2, 2, 2]  # the last is past the clip: clamped
    assert ids[..., 1].tolist() == [[4, 5]] * 8 and (ids[..., 2] == 5).all()
    with pytest.raises(ValueError, match="time rows"):
        audio_position_ids(15, audio, video, 4, 5)


def test_video_ids_are_raster_order():
    ids = video_position_ids(2, 2, 3)
    assert ids.shape == (12, 3) and ids[0].tolist() == [0, 0, 0] and ids[4].tolist() == [0, 1, 1]
    assert ids[-1].tolist() == [1, 1, 2]


@pytest.mark.parametrize("fps", [8.0, 16.0])
def test_no_audio_id_equals_a_video_id(fps):
    spec = DITPP_TINY if fps == 8.0 else DITPP_PAPER
    for t_lat in (1, 2, 5, 21):
        for h, w in ((1, 1), (2, 3), (4, 4), (30, 52)):
            video_ids = video_position_ids(t_lat, h, w)
            rows = max(1, round(t_lat * 4 / spec.video_fps / 0.16))
            audio_ids = audio_position_ids(rows * 16, audio_token_spans_s(spec, rows, 4),
                                           video_latent_frame_spans_s(spec, t_lat), h_offset=h, w_offset=w)
            seen = {tuple(i) for i in video_ids.tolist()}
            assert not seen & {tuple(i) for i in audio_ids.tolist()}
            assert audio_ids[:, 0].min() >= 0 and audio_ids[:, 0].max() <= t_lat - 1


def test_audio_video_logit_depends_only_on_the_time_distance():
    """Same query and key contents; the audio query at (t_a, H + 3, W), the video key at (t_v, 1, 2)."""
    head_dim, h, w = 24, 4, 6
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, head_dim, generator=g), torch.randn(1, 1, 1, head_dim, generator=g)

    def logit(t_audio: int, t_video: int) -> float:
        ids = torch.tensor([[t_audio, h + 3, w], [t_video, 1, 2]])
        cos, sin = rope_angles(ids, head_dim)
        qa = apply_rope(q, cos[:1], sin[:1])
        kv = apply_rope(k, cos[1:], sin[1:])
        return float((qa * kv).sum())

    for distance in (-3, 0, 2, 7):
        values = [logit(t + distance, t) for t in (0, 1, 5, 11) if t + distance >= 0]
        assert max(values) - min(values) < 1e-5
    distances = [logit(d, 0) for d in range(6)]
    assert all(abs(a - b) > 1e-4 for i, a in enumerate(distances) for b in distances[i + 1:])


def test_video_angles_equal_diffusers_wan_rope():
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    head_dim, grid = 16, (3, 4, 5)
    wan_cos, wan_sin = WanRotaryPosEmbed(head_dim, (1, 2, 2), 1024)(torch.zeros(1, 16, 3, 8, 10))
    cos, sin = rope_angles(video_position_ids(*grid), head_dim)
    assert torch.equal(wan_cos[0, :, 0, 0::2], cos) and torch.equal(wan_sin[0, :, 0, 1::2], sin)
