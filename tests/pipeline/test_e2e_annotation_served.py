"""The whole annotation chain in the real pipeline, against an OpenAI-compatible server on
127.0.0.1 that answers with fixed, well-formed replies (what a served Qwen would say about these
clips). Every step runs: captions, merge with its conflict check, taxonomy, the content filter,
then balancing at the end of the run; the accepted shards then feed ``javis latents``, which
takes the merged caption as each clip's text.

Local files have no title, so the server tells the clips apart by what it is sent, as a model
would: the shape of the frames (the rotated sample is portrait) and the pitch of the audio (each
sample has its own tone):

- ``three_scenes`` (3 clips, 440 Hz): a dog on a lawn, barking: natural/biological; all pass,
  and balancing at 2 per event scenario drops one (``over_quota``);
- ``rotated`` (portrait, 880 Hz): a person on a street, guitar music off screen, music only:
  ``music_only``;
- ``vfr`` (330 Hz): the dog on screen but only a car engine on the audio: ``conflict`` (the
  paper's own example).
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import shutil
import threading

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile

from pipeline.config import load_config
from pipeline.outputs import read_ledger, read_shards
from pipeline.runner import run
from schemas import Col

pytestmark = pytest.mark.slow

INPUTS = ("three_scenes.mp4", "rotated.mp4", "vfr.mp4")
AUDIO = {440: "A dog barks twice over a light wind.", 880: "Guitar music plays; no other sound.",
         330: "A car engine idles loudly."}  # fmt: skip


def _first_frame_shape(url: str) -> tuple[int, ...]:
    first = url.split(",")[1]  # data:video/jpeg;base64,<frame>,<frame>,...
    return cv2.imdecode(np.frombuffer(base64.b64decode(first), np.uint8), cv2.IMREAD_COLOR).shape


def _pitch_hz(wav_b64: str) -> int:
    audio, rate = soundfile.read(io.BytesIO(base64.b64decode(wav_b64)))
    spectrum = np.abs(np.fft.rfft(audio))
    return int(round(np.argmax(spectrum) * rate / len(audio) / 10.0) * 10)


def _answer(body: dict) -> str:
    parts = [p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]]
    text = " ".join(p.get("text", "") for p in parts) + " ".join(
        m["content"] for m in body["messages"] if isinstance(m["content"], str)
    )
    video = next((p["video_url"]["url"] for p in parts if p["type"] == "video_url"), None)
    if video is not None:  # caption_video
        height, width, _ = _first_frame_shape(video)
        return "A person stands on a street corner." if height > width else "A brown dog runs across a lawn."
    audio = next((p["input_audio"]["data"] for p in parts if p["type"] == "input_audio"), None)
    if audio is not None:  # caption_audio: never sees the video caption
        return AUDIO[_pitch_hz(audio)]
    if "Video description" in text:  # caption_merge
        if "brown dog" in text and "car engine" in text:
            return json.dumps({"conflict_detail": "a dog runs on screen but only a car engine is heard",
                               "conflict": True, "unknown_sources": [], "caption": "A dog runs; an engine idles."})  # fmt: skip
        music = "Guitar music" in text
        caption = "A person on a street corner; guitar music off screen." if music else "A brown dog runs and barks."
        return json.dumps({"conflict_detail": "", "conflict": False, "unknown_sources": [], "caption": caption})
    music = "guitar music off screen" in text  # taxonomy, from the merged caption
    return json.dumps({
        "event_scenario": "urban" if music else "natural", "visual_style": "camera_shooting",
        "sound_type": ["musical"] if music else ["biological", "ambient"],
        "spatial_composition": ["off_screen"] if music else ["single_subject"],
        "temporal_composition": "single_event",
    })  # fmt: skip


class _Served(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the base class's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = {"choices": [{"message": {"role": "assistant", "content": _answer(body)}, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 10, "completion_tokens": 5}}  # fmt: skip
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002
        pass


@pytest.fixture(scope="module")
def served_run(samples, ray_local, tmp_path_factory):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Served)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1"
    folder = tmp_path_factory.mktemp("served_in")
    for name in INPUTS:
        shutil.copy(samples / name, folder / name)
    overrides = ["ray.progress_bars=false", "aesthetic.enabled=false", "motion.enabled=false", "ocr.enabled=false",
                 "balance.enabled=true", "balance.max_per_category=2"]  # fmt: skip
    for step in ("caption_video", "caption_audio", "caption_merge", "taxonomy"):
        overrides += [f"{step}.llm.backend=openai", f"{step}.llm.endpoint={endpoint}", f"{step}.llm.model=qwen"]
    out = tmp_path_factory.mktemp("served")
    try:
        result = run([str(folder)], out, load_config("annotate", overrides=overrides), show_progress=False)
    finally:
        server.shutdown()
    return out, result


def test_every_step_decides_with_its_reason(served_run):
    out, _ = served_run
    clips = [r for r in read_ledger(out).to_pylist() if r[Col.KIND] == "clip"]
    by_input = {}
    for clip in clips:
        by_input.setdefault(clip[Col.INPUT].rsplit("/", 1)[-1], []).append((clip[Col.STATE], clip[Col.REASON]))
    assert by_input["rotated.mp4"] == [("rejected", "music_only")]
    assert by_input["vfr.mp4"] == [("rejected", "conflict")]
    assert sorted(by_input["three_scenes.mp4"]) == [("accepted", None), ("accepted", None), ("rejected", "over_quota")]
    conflict = next(c for c in clips if c[Col.REASON] == "conflict")
    assert conflict[Col.CAPTION_MERGE_CONFLICT] and "car engine" in conflict[Col.DETAIL]
    assert conflict[Col.BACKEND] == "openai:qwen"


def test_shards_carry_captions_and_taxonomy_and_the_funnel_holds(served_run):
    out, result = served_run
    shards = read_shards(out).to_pylist()
    assert len(shards) == 2
    for row in shards:
        assert row[Col.CAPTION_MERGE_TEXT] == "A brown dog runs and barks."
        assert row[Col.CAPTION_AUDIO_TEXT].startswith("A dog barks") and row[Col.CAPTION_VIDEO_PROMPT] == "caption_video@1"
        assert row[Col.TAXONOMY_EVENT_SCENARIO] == "natural" and row[Col.TAXONOMY_SOUND_TYPE] == ["biological", "ambient"]
    funnel = {f.stage: f for f in result.funnel}
    for f in result.funnel:
        assert f.in_ == f.passed + f.rejected + f.failed
    assert (funnel["balance"].in_, funnel["balance"].rejected) == (3, 1)
    assert funnel["content"].reasons == {"music_only": 1} and funnel["caption_merge"].reasons == {"conflict": 1}
    balance = pq.read_table(out / "rejections" / "balance").to_pylist()
    assert [(r[Col.VALUE], r[Col.THRESHOLD]) for r in balance] == [(3.0, 2.0)]


def test_latents_take_the_merged_caption(served_run):
    from model.latents import precompute_latents
    from model.spec import TINY
    from schemas.latents import LatCol

    out, _ = served_run
    summary = precompute_latents(out, encoders="tiny", spec=TINY, include_negatives=False)
    assert summary["encoded"] == 2 and summary["failed"] == 0
    rows = pq.read_table(out / "latents" / "shards").to_pylist()
    assert {(r[LatCol.CAPTION], r[LatCol.CAPTION_SOURCE]) for r in rows} == {
        ("A brown dog runs and barks.", Col.CAPTION_MERGE_TEXT)
    }
