"""Sampling a sounding video from the trained tiny checkpoints: an MP4 PyAV reads back with both
streams, the frame count and the duration asked for."""

from __future__ import annotations

import av
import pytest

from model.sample import sample


def _read(path):
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        codecs = (video.codec_context.name, audio.codec_context.name)
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
        rate = container.streams.audio[0].rate
    return codecs, frames, samples, rate


@pytest.mark.slow
@pytest.mark.parametrize("stage,num_frames,has_prior", [("joint", 16, True), ("video", 24, False)])
def test_sample_writes_an_mp4_with_video_and_audio(stage_runs, tmp_path, stage, num_frames, has_prior):
    out = tmp_path / f"{stage}.mp4"
    summary = sample(stage_runs["dirs"][stage], "a dog barks in the rain", out, steps=3, seed=1, num_frames=num_frames)
    assert out.is_file() and summary["prior"] is has_prior  # the joint checkpoint carries the estimator
    codecs, frames, samples, rate = _read(out)
    assert codecs == ("h264", "aac") and frames == num_frames and rate == 16_000
    assert summary["duration_s"] == num_frames / 8.0
    # AAC adds up to two frames of priming and padding (1024 samples each)
    assert summary["num_samples"] <= samples <= summary["num_samples"] + 2048


@pytest.mark.slow
def test_a_prior_checkpoint_samples_with_its_linked_dit_and_seeds_reproduce(stage_runs, tmp_path):
    a = sample(stage_runs["dirs"]["prior"], "rain", tmp_path / "a.mp4", steps=2, seed=3)
    sample(stage_runs["dirs"]["prior"], "rain", tmp_path / "b.mp4", steps=2, seed=3)
    assert a["prior"] and (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
