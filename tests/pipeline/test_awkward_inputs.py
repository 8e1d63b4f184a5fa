"""End to end on a corpus of awkward inputs: every file of the input folder is accounted for.

Each file is in the ledger exactly once with a terminal state, or counted in the manifest's
``skipped_inputs``; no row is ``failed`` (nothing crashes: a tricky file gets clips or a reason).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.outputs import read_ledger
from schemas import Col, Kind, State
from stages.ffmpeg import FFmpegError, run_ffmpeg

_H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
_AAC = ["-c:a", "aac", "-b:a", "64k"]
LONG_NAME = "long " + "n" * 200 + ".mp4"
# name -> (state, reason) of its source row; None: any terminal state but failed (the one-frame
# clip is too_short, the 2x2 one low_image_quality, the late audio partial_audio)
EXPECTED: dict[str, tuple[str, str | None] | None] = {
    "zero.mp4": (State.REJECTED, "empty_file"),
    "notes.txt": (State.REJECTED, "not_media"),
    "tone.wav": (State.REJECTED, "no_video"),
    "wav_named.mp4": (State.REJECTED, "no_video"),
    "cover_art.mp3": (State.REJECTED, "no_video"),
    "cover_art.m4a": (State.REJECTED, "no_video"),
    "broken_link.mp4": (State.REJECTED, "unreadable"),
    "link_loop.mp4": (State.REJECTED, "unreadable"),
    "truncated.mp4": (State.REJECTED, "unreadable"),  # the first half: the index (moov) is at the end
    "mp4_named.mkv": (State.ACCEPTED, None),
    "one_frame.mp4": None,
    "tiny_2x2.mp4": None,
    "fps1000.mp4": None,
    "pcm_6ch_96k.mov": (State.ACCEPTED, None),
    "two_audio_tracks.mkv": (State.ACCEPTED, None),
    "audio_longer.mp4": (State.ACCEPTED, None),
    "audio_later.mp4": None,
    "rotated.mp4": (State.ACCEPTED, None),
    "video_with_cover.mp4": (State.ACCEPTED, None),
    "with spaces.mp4": (State.ACCEPTED, None),
    "ünïcødé 日本.mp4": (State.ACCEPTED, None),
    "new\nline.mp4": (State.ACCEPTED, None),
    "-x.mp4": (State.ACCEPTED, None),
    "$(rm -rf x).mp4": (State.ACCEPTED, None),
    LONG_NAME: (State.ACCEPTED, None),
}
SKIPPED = {".hidden.mp4": "hidden", "mp4_named.info.json": "sidecar"}


def _av(dst: Path, seconds: float = 2.5, size: str = "96x64", rate: int = 25, extra: list[str] | None = None) -> None:
    """A test pattern with a tone: one clean scene of ``seconds``."""
    video = ["-f", "lavfi", "-i", f"testsrc2=s={size}:r={rate}:d={seconds}"]
    audio = ["-f", "lavfi", "-i", f"sine=f=440:d={seconds}:r=44100,volume=-12dB"]
    run_ffmpeg([*video, *audio, *_H264, *_AAC, *(extra or []), "-shortest", str(dst)])


def _rotated(src: Path, dst: Path) -> None:
    try:  # FFmpeg 6+
        run_ffmpeg(["-display_rotation", "90", "-i", str(src), "-c", "copy", str(dst)])
    except FFmpegError:  # older FFmpeg: the rotate tag
        run_ffmpeg(["-i", str(src), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(dst)])


def make_awkward_corpus(root: Path) -> None:
    """The files of :data:`EXPECTED` and :data:`SKIPPED` under ``root`` (some 20 small encodes, a few seconds)."""
    root.mkdir(parents=True)
    base = root.parent / "base.mp4"
    _av(base)
    tone = ["-f", "lavfi", "-i", "sine=f=330:d=2:r=44100"]
    picture = ["-f", "lavfi", "-i", "testsrc2=s=64x64:d=1", "-frames:v", "1"]
    (root / "zero.mp4").write_bytes(b"")
    (root / "notes.txt").write_text("not a video\n")
    run_ffmpeg([*tone, str(root / "tone.wav")])
    run_ffmpeg(["-f", "lavfi", "-i", "sine=f=440:d=1", "-f", "wav", str(root / "wav_named.mp4")])
    cover = ["-map", "0:a", "-map", "1:v", "-disposition:v", "attached_pic"]
    run_ffmpeg([*tone, *picture, *cover, "-c:a", "libmp3lame", "-c:v", "mjpeg", str(root / "cover_art.mp3")])
    run_ffmpeg([*tone, *picture, *cover, *_AAC, "-c:v", "mjpeg", str(root / "cover_art.m4a")])
    os.symlink(root / "nowhere.mp4", root / "broken_link.mp4")
    os.symlink("link_loop.mp4", root / "link_loop.mp4")
    data = base.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    run_ffmpeg(["-i", str(base), "-c", "copy", "-metadata", "title=mkv", "-f", "mp4", str(root / "mp4_named.mkv")])
    one_frame = ["-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=0.04", *tone, *_H264, *_AAC]
    run_ffmpeg([*one_frame, str(root / "one_frame.mp4")])
    _av(root / "tiny_2x2.mp4", size="2x2")
    _av(root / "fps1000.mp4", seconds=2.2, rate=1000)
    run_ffmpeg(
        ["-i", str(base), "-f", "lavfi", "-i", "sine=f=220:d=2.5:r=96000", "-map", "0:v", "-map", "1:a"]
        + ["-c:v", "copy", "-af", "pan=5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0", "-c:a", "pcm_s24le"]
        + [str(root / "pcm_6ch_96k.mov")]
    )
    two = ["-f", "lavfi", "-i", "sine=f=660:d=2.5:r=48000", "-map", "0:v", "-map", "0:a", "-map", "1:a"]
    run_ffmpeg(["-i", str(base), *two, "-c:v", "copy", *_AAC, str(root / "two_audio_tracks.mkv")])
    longer = ["-f", "lavfi", "-i", "sine=f=550:d=5:r=44100", "-map", "0:v", "-map", "1:a"]
    run_ffmpeg(["-i", str(base), *longer, "-c:v", "copy", *_AAC, str(root / "audio_longer.mp4")])
    later = ["-itsoffset", "1", "-f", "lavfi", "-i", "sine=f=770:d=1.5:r=44100", "-map", "0:v", "-map", "1:a"]
    run_ffmpeg(["-i", str(base), *later, "-c:v", "copy", *_AAC, str(root / "audio_later.mp4")])
    _rotated(base, root / "rotated.mp4")
    cover = ["-f", "lavfi", "-i", "testsrc2=s=64x64:d=1", "-map", "0", "-map", "1:v", "-c", "copy", "-c:v:1", "mjpeg"]
    cover += ["-frames:v:1", "1", "-disposition:v:1", "attached_pic"]  # mp4 stores it as cover art, after the tracks
    run_ffmpeg(["-i", str(base), *cover, str(root / "video_with_cover.mp4")])
    hostile = ["with spaces.mp4", "ünïcødé 日本.mp4", "new\nline.mp4", "-x.mp4", "$(rm -rf x).mp4", LONG_NAME]
    for i, name in enumerate(hostile):  # distinct bytes (a title), or they would be duplicates
        run_ffmpeg(["-i", str(base), "-c", "copy", "-metadata", f"title=hostile {i}", str(root / name)])
    (root / ".hidden.mp4").write_bytes(data)
    (root / "mp4_named.info.json").write_text("{}")


@pytest.fixture(scope="module")
def awkward_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("awkward") / "in"
    make_awkward_corpus(root)
    assert sorted(os.listdir(root)) == sorted([*EXPECTED, *SKIPPED])
    return root


@pytest.mark.slow
def test_every_awkward_file_is_accounted_for(awkward_corpus: Path, ray_local: object, tmp_path: Path) -> None:
    from pipeline.runner import run

    config = load_config("demo", overrides=["ray.progress_bars=false"])
    result = run([str(awkward_corpus)], tmp_path / "out", config, show_progress=False)
    ledger = read_ledger(result.output_dir).to_pylist()
    sources = [r for r in ledger if r[Col.KIND] == Kind.SOURCE]
    names = [os.path.relpath(r[Col.INPUT], awkward_corpus) for r in sources]
    assert sorted(names) == sorted(EXPECTED)  # each recorded file exactly once
    failed = [(r[Col.INPUT], r[Col.STAGE], r[Col.ERROR_MESSAGE]) for r in ledger if r[Col.STATE] == State.FAILED]
    assert not failed, failed
    by_name = dict(zip(names, sources))
    wrong = {}
    for name, expected in EXPECTED.items():
        row = by_name[name]
        got = (row[Col.STATE], row[Col.REASON])
        if row[Col.STATE] not in (State.ACCEPTED, State.REJECTED) or (expected is not None and got != expected):
            wrong[name] = (*got, row[Col.STAGE], row[Col.DETAIL])
    assert not wrong, wrong
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    skipped = manifest["skipped_inputs"]
    assert {reason: entry["num_files"] for reason, entry in skipped.items()} == {"hidden": 1, "sidecar": 1}
    assert result.skipped_inputs == {"hidden": 1, "sidecar": 1}  # what `javis run` prints
    assert [os.path.basename(p) for entry in skipped.values() for p in entry["examples"]] == sorted(SKIPPED)
    funnel = {row["stage"]: row for row in manifest["funnel"]}
    assert funnel["ingest"]["in"] == len(EXPECTED)
    assert all(row["in"] == row["passed"] + row["rejected"] + row["failed"] for row in manifest["funnel"])
