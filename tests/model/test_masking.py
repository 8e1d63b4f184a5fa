"""Dynamic temporal masking: which frames each task gives, drawing tasks, t = 0 and zero loss weight."""

from __future__ import annotations

import pytest
import torch

from model import flow
from model.masking import TASKS, MaskingConfig, apply_condition, draw_condition_masks, task_masks


def test_task_masks():
    expected = {
        "t2av": ([0] * 6, [0] * 16),
        "v2a": ([1] * 6, [0] * 16),
        "a2v": ([0] * 6, [1] * 16),
        "i2av": ([1] + [0] * 5, [0] * 16),
        "ai2v": ([1] + [0] * 5, [1] * 16),
        "extension": ([1] * 3 + [0] * 3, [1] * 8 + [0] * 8),
    }
    assert set(expected) == set(TASKS)
    for task, (video, audio) in expected.items():
        got_v, got_a = task_masks(task, 6, 16, prefix_frac=0.5, audio_frame_quantum=4)
        assert got_v.tolist() == [bool(x) for x in video], task
        assert got_a.tolist() == [bool(x) for x in audio], task
    with pytest.raises(ValueError):
        task_masks("v2v", 6, 16)


def test_extension_prefix_is_aligned_and_leaves_frames_to_generate():
    for frac in (0.25, 0.3, 0.4, 0.5):
        video, audio = task_masks("extension", 7, 30, prefix_frac=frac, audio_frame_quantum=4)
        kv, ka = int(video.sum()), int(audio.sum())
        assert ka % 4 == 0 and 0 < ka < 30 and 0 < kv < 7
        assert abs(kv / 7 - ka / 30) < 0.2  # the same stretch of time in both modalities
        assert video[:kv].all() and audio[:ka].all()  # a prefix, not scattered frames


def test_draw_follows_probabilities():
    g = torch.Generator().manual_seed(0)
    masks = draw_condition_masks(4000, 5, 20, MaskingConfig(), generator=g)
    assert masks.video.shape == (4000, 5) and masks.audio.shape == (4000, 20)
    share = masks.tasks.count("t2av") / 4000
    assert abs(share - 0.7) < 0.03
    assert set(masks.tasks) == set(TASKS)
    only = draw_condition_masks(50, 5, 20, MaskingConfig(probs={"a2v": 1.0}), generator=g)
    assert only.tasks == ["a2v"] * 50 and only.audio.all() and not only.video.any()
    for i, task in enumerate(masks.tasks[:200]):
        if task == "t2av":
            assert not masks.video[i].any() and not masks.audio[i].any()


def test_invalid_configs():
    with pytest.raises(ValueError):
        MaskingConfig(probs={"t2v": 1.0})
    with pytest.raises(ValueError):
        MaskingConfig(probs={"t2av": 0.0})
    with pytest.raises(ValueError):
        MaskingConfig(extension_min_frac=0.6, extension_max_frac=0.5)


def test_conditioned_frames_are_clean_and_weightless():
    g = torch.Generator().manual_seed(1)
    masks = draw_condition_masks(8, 4, 16, MaskingConfig(probs={"extension": 1.0, "i2av": 1.0},
                                                         audio_frame_quantum=4), generator=g)
    x0 = torch.randn(8, 4, 4, 3, 3, generator=g)
    t = apply_condition(flow.sample_timesteps(8, generator=g), masks.video)
    assert (t[masks.video] == 0).all() and (t[~masks.video] > 0).all()
    x_t, target = flow.training_pair(x0, t, generator=g)
    frame_given = masks.video[:, None, :, None, None].expand_as(x0)
    torch.testing.assert_close(x_t[frame_given], x0[frame_given])  # timestep 0 = the clean latent
    assert not torch.allclose(x_t[~frame_given], x0[~frame_given])
    weight = masks.video_loss_weight
    assert (weight[masks.video] == 0).all() and (weight[~masks.video] == 1).all()
    pred = target.clone()
    pred[frame_given] += 10.0  # arbitrarily wrong on given frames only
    assert flow.flow_loss(pred, target, weight).item() == 0.0
