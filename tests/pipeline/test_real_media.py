"""The spine on real recordings (through JAVIS_MEDIA_DIR) and on hostile file names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.outputs import read_ledger
from pipeline.runner import run
from schemas import Col
from stages.ffmpeg import run_ffmpeg


def _config(*overrides: str):
    return load_config("demo-spine", overrides=["ray.progress_bars=false", *overrides])


@pytest.mark.media
def test_real_footage_with_real_sound(media_dir, ray_local, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    # PySceneDetect's test video (cuts at frames 30, 180, 394, 691 of 720) with rain on it
    run_ffmpeg(["-i", str(media_dir / "psd_testvideo.mp4"), "-i", str(media_dir / "mp_rain.mp3"),
                "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest",
                str(inputs / "forest_rain.mp4")])  # fmt: skip
    shutil.copy(media_dir / "mp_big_buck_bunny_0_30.webm", inputs)  # VP8 + Vorbis in WebM
    shutil.copy(media_dir / "psd_fades.mp4", inputs)  # no audio track
    out = tmp_path / "out"
    run([str(inputs)], out, _config(), show_progress=False)
    rows = read_ledger(out).to_pylist()
    by_name: dict[str, list[dict]] = {}
    for r in rows:
        by_name.setdefault(Path(r[Col.INPUT]).name, []).append(r)
    forest = sorted((r for r in by_name["forest_rain.mp4"] if r[Col.KIND] == "clip"), key=lambda r: r[Col.CLIP_START_S])
    assert [(r[Col.CLIP_START_FRAME], r[Col.CLIP_END_FRAME]) for r in forest] == [
        (0, 30), (30, 180), (180, 394), (394, 691), (691, 720)
    ]  # fmt: skip
    outcome = [r[Col.STATE] if r[Col.STATE] == "accepted" else r[Col.REASON] for r in forest]
    assert outcome == ["too_short", "accepted", "accepted", "accepted", "too_short"]
    for r in forest[1:4]:
        assert r[Col.CUT_AV_DIFF_S] <= 1001 / 30000
        assert r[Col.SOUND_MEAN_DBFS] > -60  # rain is quiet but not silence
    fades = [r for r in by_name["psd_fades.mp4"] if r[Col.KIND] == "source"][0]
    assert (fades[Col.STATE], fades[Col.REASON]) == ("rejected", "no_audio")
    bunny = [r for r in by_name["mp_big_buck_bunny_0_30.webm"]]
    source = [r for r in bunny if r[Col.KIND] == "source"][0]
    assert (source[Col.PROBE_VIDEO_CODEC], source[Col.PROBE_AUDIO_CODEC]) == ("vp8", "vorbis")
    assert source[Col.SCENE_NUM_SCENES] >= 3  # title cards and several shots
    accepted = [r for r in bunny if r[Col.KIND] == "clip" and r[Col.STATE] == "accepted"]
    assert accepted and all(r[Col.CUT_AV_DIFF_S] <= 1 / 24 for r in accepted)
    assert all(r[Col.STATE] in ("accepted", "rejected") for r in rows)


def test_hostile_file_names_are_just_names(samples, ray_local, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    hostile = inputs / "-y; rm -rf $(echo x) `id` 'quote\" ünï ｃｏｄｅ.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=3", "-f", "lavfi", "-i", "sine=d=3",
                "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-f", "mp4", str(hostile)])  # fmt: skip
    (inputs / "notes.txt.mp4").write_text("not a video\n")
    out = tmp_path / "out"
    result = run([str(inputs)], out, _config(), show_progress=False)
    rows = {Path(r[Col.INPUT]).name: r for r in read_ledger(out).to_pylist() if r[Col.KIND] == "source"}
    assert rows[hostile.name][Col.STATE] == "accepted"
    assert rows["notes.txt.mp4"][Col.REASON] == "unreadable"
    assert result.counts["clip"] == {"accepted": 1}
    assert hostile.exists()  # nothing ran the name as a command
