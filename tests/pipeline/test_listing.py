"""pipeline/listing.py (through plan_sources): every file under an input folder or prefix gets a
ledger row or is counted as skipped, by reason."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pipeline import ids
from pipeline.inputs import SkippedInputs, check_plan, plan_sources
from pipeline.listing import normalise_extensions
from schemas import Col, State, conform
from stages.ingest import IngestConfig

CONFIG = IngestConfig()


def _write(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _fates(rows: list[dict[str, Any]], root: Path) -> dict[str, tuple[str, str | None]]:
    return {os.path.relpath(r[Col.INPUT], root): (r[Col.STATE], r.get(Col.REASON)) for r in rows}


def test_audio_other_files_and_links_each_get_a_row(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _write(root / "clip.mp4", b"video")
    for ext in ("wav", "flac", "mp3", "ogg", "m4a", "opus"):
        _write(root / "audio" / f"song.{ext}", ext.encode())
    _write(root / "readme.txt")
    _write(root / "Makefile")
    os.symlink(root / "gone.mp4", root / "broken.mp4")
    os.symlink("self.mp4", root / "self.mp4")  # a link to itself: ELOOP
    os.symlink(root, root / "audio" / "up")  # a folder link back to an enclosing folder
    os.mkfifo(root / "pipe.mp4")  # never opened: reading it would block
    skipped = SkippedInputs()
    rows = plan_sources([str(root)], CONFIG, skipped=skipped)
    fates = _fates(rows, root)
    pending = (State.PENDING, None)
    assert {k for k, v in fates.items() if v == pending} == {"clip.mp4"} | {
        f"audio/song.{e}" for e in "wav flac mp3 ogg m4a opus".split()
    }
    assert fates["readme.txt"] == fates["Makefile"] == (State.REJECTED, "not_media")
    for name in ("broken.mp4", "self.mp4", "audio/up", "pipe.mp4"):
        assert fates[name] == (State.REJECTED, "unreadable"), name
    details = {os.path.relpath(r[Col.INPUT], root): r.get(Col.DETAIL) for r in rows}
    assert "'.txt'" in details["readme.txt"] and "no extension" in details["Makefile"]
    assert "broken symbolic link" in details["broken.mp4"] and "loop" in details["self.mp4"]
    assert "loop" in details["audio/up"] and "regular file" in details["pipe.mp4"]
    assert all(r[Col.STAGE] == "ingest" for r in rows if r[Col.STATE] == State.REJECTED)
    assert len({r[Col.ID] for r in rows}) == len(rows) == 13 and not skipped.counts
    assert [r[Col.ID] for r in plan_sources([str(root)], CONFIG)] == [r[Col.ID] for r in rows]  # deterministic
    conform(rows)


def test_hidden_files_sidecars_and_filtered_extensions_are_counted(tmp_path: Path) -> None:
    root = tmp_path / "in"
    video = _write(root / "Dog [abc].mkv")
    for name in ("Dog [abc].info.json", "Dog [abc].en.vtt", "Dog [abc].webp", "Dog [abc].description", "x.mp4.part"):
        _write(root / name)
    _write(root / "cover.jpg")  # no video of that name: not a sidecar
    _write(root / ".DS_Store")
    _write(root / ".git" / "objects" / "ab")  # a hidden folder counts once and is not entered
    skipped = SkippedInputs()
    rows = plan_sources([str(root)], CONFIG, skipped=skipped)
    assert _fates(rows, root) == {video.name: (State.PENDING, None), "cover.jpg": (State.REJECTED, "not_media")}
    assert dict(skipped.counts) == {"sidecar": 5, "hidden": 2}
    report = skipped.to_json()
    assert report["hidden"]["num_files"] == 2 and str(root / ".DS_Store") in report["hidden"]["examples"]

    only = IngestConfig(extensions=("MKV",))
    assert only.extensions == (".mkv",)
    skipped = SkippedInputs()
    rows = plan_sources([str(root)], only, skipped=skipped)
    assert [r[Col.INPUT] for r in rows] == [str(video)]
    assert dict(skipped.counts) == {"hidden": 2, "extension_filter": 6}


def test_extension_setting_is_normalised_and_checked() -> None:
    assert normalise_extensions(["MP4", ".mkv", "mp4"]) == (".mkv", ".mp4")
    with pytest.raises(ValueError, match="not an extension"):
        IngestConfig(extensions=(".",))


def test_symlinked_folder_is_followed_and_its_copy_is_a_duplicate(tmp_path: Path) -> None:
    media = _write(tmp_path / "elsewhere" / "a.mp4", b"content")
    root = tmp_path / "in"
    root.mkdir()
    os.symlink(media.parent, root / "linked")
    _write(root / "z.mp4", b"content")
    rows = plan_sources([str(root)], CONFIG)
    assert [(r[Col.STATE], r.get(Col.REASON)) for r in rows] == [(State.PENDING, None), (State.REJECTED, "duplicate")]
    assert rows[0][Col.ID] == ids.source_id_for_content(ids.file_sha256(media))


def test_a_folder_of_non_media_names_nothing(tmp_path: Path) -> None:
    _write(tmp_path / "in" / "notes.txt")
    _write(tmp_path / "in" / ".hidden.mp4")
    values = [str(tmp_path / "in")]
    with pytest.raises(ValueError, match="not media"):
        check_plan(plan_sources(values, CONFIG), values)
    _write(tmp_path / "only_hidden" / ".x.mp4")
    rows = plan_sources([str(tmp_path / "only_hidden")], CONFIG)
    assert [r[Col.REASON] for r in rows] == ["no_media_found"]


def test_a_broken_link_in_a_glob_or_named_directly_is_unreadable(tmp_path: Path) -> None:
    os.symlink(tmp_path / "nowhere.mp4", tmp_path / "link.mp4")
    for value in (str(tmp_path / "*.mp4"), str(tmp_path / "link.mp4")):
        rows = plan_sources([value], CONFIG)
        assert [(r[Col.INPUT], r[Col.REASON]) for r in rows] == [(str(tmp_path / "link.mp4"), "unreadable")]


def test_objects_under_a_prefix_follow_the_same_rules(s3_server: Any, tmp_path: Path) -> None:
    from stages.storage import Storage

    bucket = Storage(f"s3://javis-test/{tmp_path.name}/listing")
    for name in ("a/one.mp4", "a/two.wav", "a/notes.txt", "a/one.info.json", "a/.hidden.mp4", "a/sub/three.webm"):
        bucket.write_bytes(name, name.encode())
    skipped = SkippedInputs()
    rows = plan_sources([bucket.root + "/a/"], CONFIG, skipped=skipped)
    fates = {r[Col.INPUT].rsplit("/a/", 1)[1]: (r[Col.STATE], r.get(Col.REASON)) for r in rows}
    assert fates == {
        "notes.txt": (State.REJECTED, "not_media"),
        "one.mp4": (State.PENDING, None),
        "sub/three.webm": (State.PENDING, None),
        "two.wav": (State.PENDING, None),
    }
    assert dict(skipped.counts) == {"hidden": 1, "sidecar": 1}
    again = plan_sources([bucket.root + "/a/"], CONFIG)
    assert [r[Col.ID] for r in again] == [r[Col.ID] for r in rows]
    one = plan_sources([bucket.location("a/notes.txt")], CONFIG)  # named alone: probe decides
    assert one[0][Col.STATE] == State.PENDING
