"""Media pruning at the end of a run: rejected clips' files go, every clip's thumbnail stays,
thumbnails no row points at go."""

from __future__ import annotations

from pipeline.outputs import prune_media
from schemas import WORK_SCHEMA, Col, Kind, State, conform


def _clip(clip_id: str, state: str, thumbs_dir: str = "media/thumbs") -> dict:
    return {
        Col.ID: clip_id,
        Col.KIND: Kind.CLIP,
        Col.SOURCE_ID: "s",
        Col.STATE: state,
        Col.MEDIA_PATH: f"media/clips/s/{clip_id}.mp4",
        Col.THUMB_PATH: f"{thumbs_dir}/s/{clip_id}.jpg",
    }


def _files(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _layout(root, names) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_rejected_media_and_unreferenced_thumbnails_go_every_clips_thumbnail_stays(tmp_path):
    _layout(tmp_path, ["media/clips/s/a.mp4", "media/clips/s/b.mp4", "media/clips/s/a.mp4.part",
                       "media/thumbs/s/a.jpg", "media/thumbs/s/b.jpg", "media/thumbs/s/orphan.jpg"])  # fmt: skip
    rows = conform([_clip("a", State.ACCEPTED), _clip("b", State.REJECTED)], WORK_SCHEMA)
    removed = prune_media(str(tmp_path), rows, "media/clips", keep_rejected=False, thumbs_dir="media/thumbs")
    assert _files(tmp_path) == {"media/clips/s/a.mp4", "media/thumbs/s/a.jpg", "media/thumbs/s/b.jpg"}
    assert removed == 3


def test_without_thumbs_dir_only_clip_files_are_pruned(tmp_path):
    _layout(tmp_path, ["media/clips/s/b.mp4", "media/thumbs/s/orphan.jpg"])
    rows = conform([_clip("b", State.REJECTED)], WORK_SCHEMA)
    assert prune_media(str(tmp_path), rows, "media/clips", keep_rejected=False) == 1
    assert _files(tmp_path) == {"media/thumbs/s/orphan.jpg"}


def test_a_folder_set_with_a_trailing_slash_keeps_its_files(tmp_path):
    _layout(tmp_path, ["media/clips/s/a.mp4", "media/thumbs/s/a.jpg"])
    row = _clip("a", State.ACCEPTED, thumbs_dir="media/thumbs/")
    row[Col.MEDIA_PATH] = "media/clips//s/a.mp4"
    rows = conform([row], WORK_SCHEMA)
    assert prune_media(str(tmp_path), rows, "media/clips/", keep_rejected=False, thumbs_dir="media/thumbs/") == 0
    assert _files(tmp_path) == {"media/clips/s/a.mp4", "media/thumbs/s/a.jpg"}


def test_a_run_whose_folders_end_with_a_slash_keeps_and_verifies_its_clips(samples, ray_local, tmp_path):
    from pathlib import Path

    from pipeline.config import load_config
    from pipeline.outputs import read_ledger
    from pipeline.runner import run

    overrides = ["ray.progress_bars=false", "cut.clips_dir=media/clips/", "scene_cut.thumbs_dir=media/thumbs/"]
    result = run([str(samples)], tmp_path / "out", load_config("demo-spine", overrides=overrides), show_progress=False)
    clips = [r for r in read_ledger(result.output_dir).to_pylist() if r[Col.KIND] == Kind.CLIP]
    accepted = [r for r in clips if r[Col.STATE] == State.ACCEPTED]
    assert accepted and not [r for r in clips if r[Col.STATE] == State.FAILED]
    assert all((Path(result.output_dir) / r[Col.MEDIA_PATH]).is_file() for r in accepted)
    assert all((Path(result.output_dir) / r[Col.THUMB_PATH]).is_file() for r in clips if r[Col.THUMB_PATH])
