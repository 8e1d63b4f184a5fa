import math

import numpy as np
import pytest

from schemas import Col
from stages.sound import DBFS_FLOOR, Sound, SoundConfig, loudness_dbfs, to_dbfs


def test_dbfs_of_full_scale_and_silence():
    assert to_dbfs(1.0) == 0.0
    assert to_dbfs(0.5) == pytest.approx(-3.0103, abs=1e-4)  # a full-scale sine's mean power
    assert to_dbfs(0.0) == DBFS_FLOOR


def _write_wav(path, samples: np.ndarray, rate: int = 16000) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray((samples * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_loudness_of_a_known_sine(tmp_path):
    t = np.arange(16000 * 2) / 16000
    amplitude = 0.25
    _write_wav(tmp_path / "sine.wav", amplitude * np.sin(2 * math.pi * 440 * t))
    mean, peak, num_samples = loudness_dbfs(str(tmp_path / "sine.wav"))
    assert num_samples == 32000
    assert peak == pytest.approx(20 * math.log10(amplitude), abs=0.05)
    assert mean == pytest.approx(20 * math.log10(amplitude) - 3.0103, abs=0.05)


def test_sound_stage_reasons(samples, tmp_path):
    stage = Sound(SoundConfig(min_mean_dbfs=-60.0), output_dir=str(samples))
    tone = stage.process({Col.MEDIA_BYTES: None, Col.MEDIA_PATH: "three_scenes.mp4"})
    assert tone.rejection is None
    # the samples' tone: FFmpeg's sine source (amplitude 1/8) lowered by 12 dB, through AAC
    assert tone.columns[Col.SOUND_PEAK_DBFS] == pytest.approx(-30.06, abs=0.5)
    assert tone.columns[Col.SOUND_MEAN_DBFS] == pytest.approx(-33.07, abs=0.5)
    silent = stage.process({Col.MEDIA_BYTES: None, Col.MEDIA_PATH: "silent.mp4"})
    assert silent.rejection.reason == "silent"
    assert silent.rejection.value == DBFS_FLOOR and silent.rejection.threshold == -60.0
    quiet = stage.process({Col.MEDIA_BYTES: (samples / "quiet_noise.mp4").read_bytes(), Col.MEDIA_PATH: None})
    assert quiet.rejection.reason == "silent"
    assert -80 < quiet.columns[Col.SOUND_MEAN_DBFS] < -60
    no_audio = stage.process({Col.MEDIA_BYTES: None, Col.MEDIA_PATH: "no_audio.mp4"})
    assert no_audio.rejection.reason == "no_audio"
    looser = Sound(SoundConfig(min_mean_dbfs=-90.0), output_dir=str(samples))
    assert looser.process({Col.MEDIA_BYTES: None, Col.MEDIA_PATH: "quiet_noise.mp4"}).rejection is None
