import numpy as np
import pytest

from schemas import Col, State
from stages.caption_audio import CaptionAudio, CaptionAudioConfig
from stages.decode import AUDIO_RATE_HZ, DecodedClip
from stages.llm.base import BackendTimeout, Completion
from tests.stages.test_annotation import FakeBackend, case, clip_row, completion, run_stage


def _row(clip_id: str, audio_s: float | None, **columns) -> dict:
    audio = None if audio_s is None else np.sin(np.arange(int(audio_s * AUDIO_RATE_HZ)) / 10).astype(np.float32)
    decoded = DecodedClip(audio_s or 1.0, {}, {}, audio).to_bytes()
    return clip_row(clip_id, decoded=decoded, **columns)


def test_decode_needs():
    assert CaptionAudio.frame_need(CaptionAudioConfig()) is None
    assert CaptionAudio.needs_audio(CaptionAudioConfig()) is True


def test_request_holds_only_the_audio_and_is_cut_to_the_model_window():
    backend = FakeBackend([completion(case("captions", "audio_caption"))])
    stage = CaptionAudio(CaptionAudioConfig(max_audio_s=2.0), backend)
    row = _row("c0", 3.0, caption_video_text="A dog on a beach", src_title="Dog barking")
    out = run_stage(stage, [row])["c0"]
    (request,) = backend.requests
    assert request.audio.dtype == np.float32 and len(request.audio) == 2 * AUDIO_RATE_HZ
    assert request.audio_rate_hz == AUDIO_RATE_HZ and request.frames is None
    # never the video caption, never the title: the audio model must not be told what to hear
    assert "dog" not in request.text.lower() and "dog" not in (request.system or "").lower()
    assert out[Col.STATE] == State.PENDING
    assert out[Col.CAPTION_AUDIO_TEXT] == case("captions", "audio_caption")["text"]
    assert (out[Col.CAPTION_AUDIO_PROMPT], out[Col.CAPTION_AUDIO_BACKEND]) == ("caption_audio@1", "fake:recorded")


@pytest.mark.parametrize("name", ["empty", "truncated"])
def test_unusable_captions_are_rejected(name):
    c = case("captions", name)
    out = run_stage(CaptionAudio(CaptionAudioConfig(), FakeBackend([completion(c)])), [_row("c0", 1.0)])["c0"]
    assert (out[Col.STATE], out[Col.REASON]) == (State.REJECTED, c["expect"])


def test_no_audio_or_a_timeout_fails():
    backend = FakeBackend(lambda r: Completion("Rain.", "stop"))
    out = run_stage(CaptionAudio(CaptionAudioConfig(), backend), [_row("c0", None), _row("c1", 1.0)])
    assert out["c0"][Col.STATE] == State.FAILED and "no decoded audio" in out["c0"][Col.ERROR_MESSAGE]
    assert out["c1"][Col.CAPTION_AUDIO_TEXT] == "Rain."
    out = run_stage(CaptionAudio(CaptionAudioConfig(), FakeBackend(error=BackendTimeout("slow"))), [_row("c0", 1.0)])
    assert (out["c0"][Col.STATE], out["c0"][Col.ERROR_TYPE]) == (State.FAILED, "BackendTimeout")
