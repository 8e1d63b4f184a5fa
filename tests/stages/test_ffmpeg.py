"""Which FFmpeg runs (fake binaries that report old versions or lack things), and the media
javis makes and cuts with each real FFmpeg this machine has: Debian's (5.1 on Debian 12), an old
build from ``$JAVIS_TEST_OLD_FFMPEG`` (CI fetches 4.2.2) and the bundled one."""

from __future__ import annotations

import os
import stat

import av
import pytest

from schemas import Col
from stages import ffmpeg
from stages.ffmpeg import REQUIRED_ENCODERS, REQUIRED_FILTERS, FFmpegUnsupported, parse_version, select_ffmpeg

NEW_OPTIONS = ("fps_mode", "display_rotation", "enc_time_base")


@pytest.fixture(autouse=True)
def fresh_selection(monkeypatch):
    """Each test chooses again with its own environment; later tests get the usual choice."""
    monkeypatch.delenv("JAVIS_FFMPEG", raising=False)
    select_ffmpeg.cache_clear()
    yield
    select_ffmpeg.cache_clear()


def fake_ffmpeg(folder, version, options=NEW_OPTIONS, encoders=REQUIRED_ENCODERS, filters=REQUIRED_FILTERS,
                exit_code=0):  # fmt: skip
    """A shell script named ``ffmpeg`` in ``folder`` that answers javis' questions like a build
    with this version, these options, encoders and filters."""
    folder.mkdir(exist_ok=True)
    path = folder / "ffmpeg"
    help_text = "\\n".join(f"-{o}  some option" for o in options)
    encoder_rows = "\\n".join(f" V....D {e:<20} some encoder" for e in encoders)
    filter_rows = "\\n".join(f" ... {f:<16} V->V  some filter" for f in filters)
    path.write_text(
        "#!/bin/sh\n"
        f"[ {exit_code} -ne 0 ] && exit {exit_code}\n"
        'case "$*" in\n'
        f'  *-version*) echo "ffmpeg version {version} Copyright (c) 2000-2021 the FFmpeg developers" ;;\n'
        f'  *"-h long"*) printf "Main options:\\n{help_text}\\n" ;;\n'
        f'  *-encoders*) printf "Encoders:\\n V..... = Video\\n ------\\n{encoder_rows}\\n" ;;\n'
        f'  *-filters*) printf "Filters:\\n  T.. = Timeline support\\n{filter_rows}\\n" ;;\n'
        "  *) exit 1 ;;\n"
        "esac\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def only_on_path(monkeypatch, folder):
    monkeypatch.setenv("PATH", str(folder))


def test_versions_are_parsed_from_the_version_line():
    assert parse_version("ffmpeg version 4.4.2-0ubuntu0.22.04.1 Copyright (c) 2000-2021") == (4, 4)
    assert parse_version("ffmpeg version n7.1 Copyright") == (7, 1)
    assert parse_version("ffmpeg version 5.1.9-0+deb12u1 Copyright") == (5, 1)
    assert parse_version("ffmpeg version N-109421-g1234567 Copyright") is None  # a git build
    assert parse_version("ffmpeg version javis-test-wrapper") is None


def test_a_suitable_ffmpeg_on_path_is_used_with_older_options(monkeypatch, tmp_path):
    fake = fake_ffmpeg(tmp_path / "bin", "4.4.2-0ubuntu0.22.04.1", options=("vsync", "enc_time_base"))
    only_on_path(monkeypatch, tmp_path / "bin")
    choice = select_ffmpeg()
    assert (choice.source, choice.binary.path) == ("path", str(fake))
    assert ffmpeg.fps_mode_args("passthrough") == ["-vsync", "passthrough"]
    assert not ffmpeg.has_option("display_rotation")
    info = ffmpeg.ffmpeg_info()
    assert info["adapted_options"] == ["-fps_mode", "-display_rotation"]
    assert "4.4.2-0ubuntu0.22.04.1" in info["reason"] and "-fps_mode" in info["reason"]


def test_a_new_ffmpeg_on_path_gets_the_new_options(monkeypatch, tmp_path):
    fake_ffmpeg(tmp_path / "bin", "7.1")
    only_on_path(monkeypatch, tmp_path / "bin")
    assert select_ffmpeg().source == "path"
    assert ffmpeg.fps_mode_args("passthrough") == ["-fps_mode", "passthrough"]
    assert ffmpeg.ffmpeg_info()["adapted_options"] == []


@pytest.mark.parametrize(
    "kwargs, why",
    [
        ({"version": "3.4.8"}, "version 3.4 < 4.2"),
        ({"version": "6.1", "encoders": ("aac",)}, "no encoder libx264"),
        ({"version": "6.1", "filters": ("scale",)}, "no filters format, setsar, concat, setpts, volume, testsrc2"),
        ({"version": "6.1", "exit_code": 127}, "does not run"),
    ],
)
def test_an_unsuitable_ffmpeg_on_path_gives_way_to_the_bundled_one(monkeypatch, tmp_path, kwargs, why):
    import imageio_ffmpeg

    fake_ffmpeg(tmp_path / "bin", **kwargs)
    only_on_path(monkeypatch, tmp_path / "bin")
    choice = select_ffmpeg()
    assert (choice.source, choice.binary.path) == ("bundled", imageio_ffmpeg.get_ffmpeg_exe())
    assert why in choice.reason and "using the bundled" in choice.reason
    assert ffmpeg.ffmpeg_info()["reason"] == choice.reason


def test_javis_ffmpeg_wins_over_path(monkeypatch, tmp_path):
    fake_ffmpeg(tmp_path / "bin", "7.1")
    only_on_path(monkeypatch, tmp_path / "bin")
    mine = fake_ffmpeg(tmp_path / "mine", "4.4.1", options=("vsync",))
    monkeypatch.setenv("JAVIS_FFMPEG", str(mine))
    choice = select_ffmpeg()
    assert (choice.source, choice.binary.path) == ("env", str(mine))
    assert ffmpeg.fps_mode_args() == ["-vsync", "passthrough"]


def test_a_javis_ffmpeg_that_is_too_old_is_one_clear_error(monkeypatch, tmp_path):
    old = fake_ffmpeg(tmp_path / "old", "4.0.6", encoders=("aac",))
    monkeypatch.setenv("JAVIS_FFMPEG", str(old))
    with pytest.raises(FFmpegUnsupported, match=r"version 4\.0 < 4\.2; no encoder libx264\)\. .*unset JAVIS_FFMPEG"):
        ffmpeg.ffmpeg_exe()
    assert isinstance(FFmpegUnsupported("x"), ValueError)  # the CLI shows it as a one-line user error


@pytest.mark.parametrize("command", ["run", "demo"])
def test_the_cli_reports_an_unusable_javis_ffmpeg_in_one_line(monkeypatch, tmp_path, samples, command):
    from click.testing import CliRunner

    import pipeline.runner
    from pipeline.cli import main

    monkeypatch.setattr(pipeline.runner, "start_ray", lambda *a, **k: pytest.fail("Ray was started"))
    monkeypatch.setenv("JAVIS_FFMPEG", str(fake_ffmpeg(tmp_path / "old", "3.4.8")))
    out = tmp_path / "out"
    inputs = ["-i", str(samples)] if command == "run" else []
    result = CliRunner().invoke(main, [command, *inputs, "-o", str(out), "--quiet"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("Error: JAVIS_FFMPEG=") and "version 3.4 < 4.2" in result.output
    assert not out.exists()


def test_a_javis_ffmpeg_that_is_not_a_file_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVIS_FFMPEG", str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="not an executable file"):
        ffmpeg.ffmpeg_exe()


def test_the_bundled_build_meets_every_requirement():
    import imageio_ffmpeg

    binary = ffmpeg.inspect_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())
    assert binary.missing() == [] and binary.version is not None


def _real_ffmpegs() -> list:
    import imageio_ffmpeg

    old = os.environ.get("JAVIS_TEST_OLD_FFMPEG")
    debian = "/usr/bin/ffmpeg"
    return [
        pytest.param(debian, id="debian", marks=pytest.mark.skipif(not os.access(debian, os.X_OK), reason="no /usr/bin/ffmpeg")),
        pytest.param(old, id="old", marks=pytest.mark.skipif(not old, reason="JAVIS_TEST_OLD_FFMPEG not set")),
        pytest.param(imageio_ffmpeg.get_ffmpeg_exe(), id="bundled"),
    ]  # fmt: skip


@pytest.mark.parametrize("binary", _real_ffmpegs())
def test_samples_probe_and_cut_work_with_each_real_ffmpeg(monkeypatch, tmp_path, binary):
    from pipeline.samples import make_sample_media
    from stages.cut import Cut, CutConfig
    from stages.probe import ProbeConfig, probe_media

    monkeypatch.setenv("JAVIS_FFMPEG", binary)
    choice = select_ffmpeg()
    assert choice.source == "env" and choice.binary.path == binary
    samples = tmp_path / "samples"
    make_sample_media(samples)

    facts = {n: probe_media(str(samples / n), ProbeConfig()) for n in ("three_scenes.mp4", "rotated.mp4", "vfr.mp4")}
    assert facts["three_scenes.mp4"][Col.PROBE_DURATION_S] == pytest.approx(10.0, abs=0.05)
    assert facts["rotated.mp4"][Col.PROBE_ROTATION_DEG] in (90, 270)
    assert facts["vfr.mp4"][Col.PROBE_IS_VFR] is True
    with av.open(str(samples / "silent.mp4")) as c:
        assert c.streams.audio[0].duration * c.streams.audio[0].time_base == pytest.approx(3.0, abs=0.05)

    cut = Cut(CutConfig(x264_preset="ultrafast"), str(tmp_path / "out"))
    row = {Col.ID: "c1", Col.SOURCE_ID: "s1", Col.PROBE_FPS: 25.0}
    scene = cut.process(
        {**row, Col.SRC_PATH: str(samples / "three_scenes.mp4"), Col.CLIP_START_S: 4.0, Col.CLIP_END_S: 7.0}
    )
    assert scene.rejection is None
    assert scene.columns[Col.CUT_VIDEO_DURATION_S] == pytest.approx(3.0, abs=1e-6)
    assert scene.columns[Col.CUT_FFMPEG_VERSION] == choice.binary.version_line
    with av.open(str(tmp_path / "out" / scene.columns[Col.MEDIA_PATH])) as c:
        assert sum(1 for _ in c.decode(video=0)) == 75  # frames 100..174, none duplicated or dropped
    vfr = cut.process({**row, Col.ID: "c2", Col.SRC_PATH: str(samples / "vfr.mp4"), Col.CLIP_START_S: 0.0,
                       Col.CLIP_END_S: 3.9})  # fmt: skip
    assert vfr.rejection is None and vfr.columns[Col.CUT_IS_VFR] is True  # passthrough kept the timestamps
    rotated = cut.process({**row, Col.ID: "c3", Col.SRC_PATH: str(samples / "rotated.mp4"), Col.CLIP_START_S: 0.0,
                           Col.CLIP_END_S: 3.0})  # fmt: skip
    assert (rotated.columns[Col.CUT_WIDTH], rotated.columns[Col.CUT_HEIGHT]) == (240, 320)


def test_debian_ffmpeg_on_path_is_used_and_adapted_to(monkeypatch, tmp_path):
    if not os.access("/usr/bin/ffmpeg", os.X_OK):
        pytest.skip("no /usr/bin/ffmpeg")
    (tmp_path / "bin").mkdir()
    os.symlink("/usr/bin/ffmpeg", tmp_path / "bin" / "ffmpeg")
    only_on_path(monkeypatch, tmp_path / "bin")
    choice = select_ffmpeg()
    assert (choice.source, choice.binary.path) == ("path", str(tmp_path / "bin" / "ffmpeg"))
    if choice.binary.version < (6, 1):  # Debian 12: 5.1
        assert "-display_rotation" in ffmpeg.ffmpeg_info()["adapted_options"]
