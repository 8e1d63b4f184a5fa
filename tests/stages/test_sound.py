import math

import numpy as np
import pytest

from schemas import Col
from stages.analysis import DetectorConfig, PackPlan, SourceAnalysis
from stages.decode import DecodedClip, Loudness
from stages.sound import DBFS_FLOOR, Sound, SoundConfig, to_dbfs


def test_dbfs_of_full_scale_and_silence():
    assert to_dbfs(1.0) == 0.0
    assert to_dbfs(0.5) == pytest.approx(-3.0103, abs=1e-4)  # a full-scale sine's mean power
    assert to_dbfs(0.0) == DBFS_FLOOR


def _row(loudness: Loudness | None, duration_s: float = 2.0, fps: float = 25.0) -> dict:
    pack = DecodedClip(duration_s, {}, {}, None, loudness)
    return {Col.DECODED: pack.to_bytes(), Col.CLIP_DURATION_S: duration_s, Col.PROBE_FPS: fps}


def test_loudness_of_a_known_sine_in_a_pack():
    amplitude, rate = 0.25, 16000
    x = amplitude * np.sin(2 * math.pi * 440 * np.arange(rate * 2) / rate)
    stereo = np.stack([x, x])  # both channels: the mean is over samples and channels
    loudness = Loudness(float(np.square(stereo).sum()), stereo.size, float(np.abs(stereo).max()), 2 * rate, 0.0, 2.0)
    outcome = Sound(SoundConfig()).process(_row(loudness))
    assert outcome.rejection is None
    assert outcome.columns[Col.SOUND_PEAK_DBFS] == pytest.approx(20 * math.log10(amplitude), abs=0.05)
    assert outcome.columns[Col.SOUND_MEAN_DBFS] == pytest.approx(20 * math.log10(amplitude) - 3.0103, abs=0.05)
    assert outcome.columns[Col.SOUND_AUDIO_GAP_S] == 0.0


def test_sound_reasons_one_line_each():
    stage = Sound(SoundConfig(min_mean_dbfs=-60.0))
    assert stage.process(_row(None)).rejection.reason == "no_audio"
    assert stage.process(_row(Loudness(0.0, 0, 0.0, 0, 2.0, 2.0))).rejection.reason == "no_audio"
    silent = stage.process(_row(Loudness(0.0, 64000, 0.0, 32000, 0.0, 2.0))).rejection
    assert (silent.reason, silent.value, silent.threshold) == ("silent", DBFS_FLOOR, -60.0)
    # audio that stops 0.5 s before the picture: more than one 25 fps frame uncovered
    short = stage.process(_row(Loudness(1000.0, 48000, 0.5, 24000, 0.0, 1.5))).rejection
    assert (short.reason, short.metric) == ("partial_audio", Col.SOUND_AUDIO_GAP_S)
    assert short.value == pytest.approx(0.5) and short.threshold == pytest.approx(0.04)
    # a gap under one frame (AAC frames rarely end exactly with the picture) is not a reason
    assert stage.process(_row(Loudness(1000.0, 63000, 0.5, 31500, 0.0, 1.97))).rejection is None


def _pack(path) -> DecodedClip:
    analysis = SourceAnalysis(str(path), DetectorConfig(), PackPlan(loudness=True))
    return next(iter(analysis)).pack


def test_the_single_decode_measures_loudness_like_the_encoded_clip(samples):
    """Sample media through the analysis pass: the tone, digital silence, quiet noise, early end."""
    stage = Sound(SoundConfig(min_mean_dbfs=-60.0))

    def decide(name, duration):
        return stage.process({Col.DECODED: _pack(samples / name).to_bytes(), Col.CLIP_DURATION_S: duration,
                              Col.PROBE_FPS: 25.0})  # fmt: skip

    tone = decide("three_scenes.mp4", 4.0)
    assert tone.rejection is None
    # the samples' tone: FFmpeg's sine source (amplitude 1/8) lowered by 12 dB, through AAC
    assert tone.columns[Col.SOUND_PEAK_DBFS] == pytest.approx(-30.06, abs=0.5)
    assert tone.columns[Col.SOUND_MEAN_DBFS] == pytest.approx(-33.07, abs=0.5)
    silent = decide("silent.mp4", 3.0)
    assert silent.rejection.reason == "silent" and silent.rejection.value == DBFS_FLOOR
    quiet = decide("quiet_noise.mp4", 3.0)
    assert quiet.rejection.reason == "silent" and -80 < quiet.columns[Col.SOUND_MEAN_DBFS] < -60
    early = decide("audio_ends_early.mp4", 6.0)  # 3 s of sound under 6 s of picture
    assert early.rejection.reason == "partial_audio" and early.rejection.value == pytest.approx(3.0, abs=0.05)
    looser = Sound(SoundConfig(min_mean_dbfs=-90.0))
    row = {Col.DECODED: _pack(samples / "quiet_noise.mp4").to_bytes(), Col.CLIP_DURATION_S: 3.0, Col.PROBE_FPS: 25.0}
    assert looser.process(row).rejection is None
