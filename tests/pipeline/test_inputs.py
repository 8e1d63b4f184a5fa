"""pipeline/inputs.py: every kind of --input becomes source rows with deterministic ids."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import stages.download
from pipeline import ids
from pipeline.inputs import FileIdCache, plan_sources
from schemas import Col, State, conform
from stages.base import apply_stage
from stages.ingest import Ingest, IngestConfig
from stages.storage import Storage

CONFIG = IngestConfig()


def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _by_input(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row[Col.INPUT]: row for row in rows}


def test_folder_is_searched_recursively_for_media_files(tmp_path: Path) -> None:
    a = _write(tmp_path / "in" / "a.mp4", b"a")
    b = _write(tmp_path / "in" / "sub" / "deeper" / "B.MKV", b"b")
    notes = _write(tmp_path / "in" / "notes.txt", b"https://example.com/not-read")  # not read as a list
    frame = _write(tmp_path / "in" / "sub" / "frame.jpg", b"jpg")
    all_rows = plan_sources([str(tmp_path / "in")], CONFIG)
    assert [row[Col.INPUT] for row in all_rows] == [str(a), str(notes), str(b), str(frame)]  # name order, depth first
    rows = [r for r in all_rows if r[Col.STATE] == State.PENDING]
    assert [row[Col.INPUT] for row in rows] == [str(a), str(b)]
    assert [row[Col.SRC_PATH] for row in rows] == [str(a.resolve()), str(b.resolve())]
    assert rows[0][Col.ID] == ids.source_id_for_content(ids.file_sha256(a))  # ids of media as before
    assert all(row[Col.SOURCE_ID] == row[Col.ID] for row in rows)
    others = [(r[Col.STAGE], r[Col.REASON]) for r in all_rows if r[Col.STATE] == State.REJECTED]
    assert others == [("ingest", "not_media")] * 2
    conform(all_rows)  # every key is a schema column


def test_glob_pattern_selects_matching_files(tmp_path: Path) -> None:
    top = _write(tmp_path / "v" / "top.mp4", b"1")
    deep = _write(tmp_path / "v" / "x" / "deep.mp4", b"2")
    _write(tmp_path / "v" / "top.webm", b"3")
    assert [r[Col.INPUT] for r in plan_sources([str(tmp_path / "v" / "*.mp4")], CONFIG)] == [str(top)]
    recursive = plan_sources([str(tmp_path / "v" / "**" / "*.mp4")], CONFIG)
    assert [r[Col.INPUT] for r in recursive] == [str(top), str(deep)]


def test_url_list_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    clip = _write(tmp_path / "clip.mp4", b"local")
    listing = tmp_path / "urls.txt"
    listing.write_text(f"# my sources\n\n  https://example.com/v/1  \n\t\nhttp://example.com/v/2\n{clip}\n# end\n")
    rows = plan_sources([str(listing)], CONFIG)
    assert [r[Col.INPUT] for r in rows] == ["https://example.com/v/1", "http://example.com/v/2", str(clip)]
    first = rows[0]
    assert first[Col.SRC_URL] == "https://example.com/v/1" and first.get(Col.SRC_PATH) is None
    assert first[Col.ID] == ids.source_id_for_url("https://example.com/v/1")
    assert rows[2][Col.SRC_PATH] == str(clip.resolve())


@pytest.mark.parametrize(("suffix", "sep"), [(".csv", ","), (".tsv", "\t")])
def test_table_list_reads_its_url_column(tmp_path: Path, suffix: str, sep: str) -> None:
    listing = tmp_path / f"sources{suffix}"
    lines = [["title", " URL "], ["Dog", "https://example.com/dog"], ["none", ""], ["Cat", "https://example.com/cat"]]
    listing.write_text("\n".join(sep.join(line) for line in lines) + "\n")
    rows = plan_sources([str(listing)], CONFIG)
    assert [r[Col.SRC_URL] for r in rows] == ["https://example.com/dog", "https://example.com/cat"]


def test_same_content_twice_keeps_a_rejected_duplicate(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.mp4", b"same bytes")
    second = _write(tmp_path / "copy" / "b.mp4", b"same bytes")
    rows = plan_sources([str(first), str(second)], CONFIG)
    assert len(rows) == 2
    original, dup = _by_input(rows)[str(first)], _by_input(rows)[str(second)]
    assert original[Col.STATE] == State.PENDING
    assert (dup[Col.STATE], dup[Col.STAGE], dup[Col.REASON]) == (State.REJECTED, "ingest", "duplicate")
    assert dup[Col.SRC_DUPLICATE_OF] == original[Col.ID]
    assert dup[Col.ID] != original[Col.ID] and dup[Col.SOURCE_ID] == dup[Col.ID]
    conform(rows)


def test_same_url_after_canonicalisation_is_a_duplicate() -> None:
    rows = plan_sources(["https://Example.com/v?utm_source=x&b=2&a=1", "https://example.com/v?a=1&b=2"], CONFIG)
    assert [r[Col.STATE] for r in rows] == [State.PENDING, State.REJECTED]
    assert rows[1][Col.SRC_DUPLICATE_OF] == rows[0][Col.ID]


def test_same_input_twice_is_one_source(tmp_path: Path) -> None:
    clip = _write(tmp_path / "a.mp4", b"x")
    url = "https://example.com/v/1"
    rows = plan_sources([str(clip), url, str(clip), url], CONFIG)
    assert [r[Col.INPUT] for r in rows] == [str(clip), url]


def test_missing_path_is_planned_and_ingest_rejects_it(tmp_path: Path) -> None:
    missing = tmp_path / "gone.mp4"
    rows = plan_sources([str(missing)], CONFIG)
    assert len(rows) == 1 and rows[0][Col.STATE] == State.PENDING
    assert rows[0][Col.ID] == ids.source_id_for_text("path", str(missing))
    assert rows[0][Col.SRC_PATH] == str(missing)
    out = apply_stage(Ingest(CONFIG, str(tmp_path)), conform(rows), "cfg").to_pylist()
    assert (out[0][Col.STATE], out[0][Col.STAGE], out[0][Col.REASON]) == (State.REJECTED, "ingest", "missing_file")


def test_unparseable_url_still_gets_a_row() -> None:
    rows = plan_sources(["http://"], CONFIG)
    assert len(rows) == 1 and rows[0][Col.ID] == ids.source_id_for_text("bad_url", "http://")


def test_file_id_cache_reuses_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = ids.file_sha256

    def counting(path: str) -> str:
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(ids, "file_sha256", counting)
    folder = tmp_path / "in"
    a = _write(folder / "a.mp4", b"a")
    _write(folder / "b.mp4", b"b")
    store = Storage(tmp_path / "cache")
    cache = FileIdCache(store, "ids.json")
    first = plan_sources([str(folder)], CONFIG, cache)
    assert len(calls) == 2
    second = plan_sources([str(folder)], CONFIG, cache)
    assert [r[Col.ID] for r in second] == [r[Col.ID] for r in first]
    assert len(calls) == 2
    cache.save()
    plan_sources([str(folder)], CONFIG, FileIdCache(store, "ids.json"))  # a new run reads the saved cache
    assert len(calls) == 2
    a.write_bytes(b"changed content")
    os.utime(a, ns=(1, 1))
    rows = plan_sources([str(folder)], CONFIG, FileIdCache(store, "ids.json"))
    assert calls[2:] == [str(a)]
    assert rows[0][Col.ID] == ids.source_id_for_content(real(a))


def test_unreadable_cache_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "ids.json").write_text("{not json")
    clip = _write(tmp_path / "a.mp4", b"a")
    rows = plan_sources([str(clip)], CONFIG, FileIdCache(Storage(tmp_path), "ids.json"))
    assert rows[0][Col.ID] == ids.source_id_for_content(ids.file_sha256(clip))


def test_failed_search_is_one_failed_row(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(query: str, config: IngestConfig) -> list[tuple[str, str | None]]:
        raise stages.download.DownloadFailed("TransportError", "no route to host")

    monkeypatch.setattr(stages.download, "expand_search", failing)
    rows = plan_sources(["ytsearch5:dog barking"], CONFIG)
    assert len(rows) == 1
    row = rows[0]
    assert (row[Col.STATE], row[Col.STAGE], row[Col.ERROR_TYPE]) == (State.FAILED, "ingest", "DownloadFailed")
    assert "no route to host" in row[Col.ERROR_MESSAGE]
    assert row[Col.ID] == ids.source_id_for_text("search", "ytsearch5:dog barking")
    assert row[Col.SRC_QUERY] == "ytsearch5:dog barking" and row.get(Col.SRC_URL) is None
    conform(rows)


def test_search_results_become_url_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, IngestConfig]] = []
    hits = [("https://www.youtube.com/watch?v=a", "Dog A"), ("https://www.youtube.com/watch?v=b", None)]

    def fake(query: str, config: IngestConfig) -> list[tuple[str, str | None]]:
        seen.append((query, config))
        return hits

    monkeypatch.setattr(stages.download, "expand_search", fake)
    config = IngestConfig(search_max_results=2)
    rows = plan_sources(["ytsearch:dog"], config)
    assert seen == [("ytsearch:dog", config)]
    assert [(r[Col.SRC_URL], r[Col.SRC_TITLE]) for r in rows] == hits
    assert all(r[Col.SRC_QUERY] == "ytsearch:dog" and r[Col.STATE] == State.PENDING for r in rows)
    assert rows[0][Col.ID] == ids.source_id_for_url(hits[0][0])


def test_csv_with_byte_order_mark_reads_its_url_column(tmp_path: Path) -> None:
    listing = tmp_path / "excel.csv"
    listing.write_bytes("url,title\nhttps://example.com/a,A\n".encode("utf-8-sig"))
    rows = plan_sources([str(listing)], CONFIG)
    assert [r[Col.SRC_URL] for r in rows] == ["https://example.com/a"]


def test_one_file_named_two_ways_is_one_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "a.mp4", b"x")
    monkeypatch.chdir(tmp_path)
    rows = plan_sources(["a.mp4", "./a.mp4"], CONFIG)
    assert len(rows) == 1


def test_list_comments_relative_paths_and_empty_inputs(tmp_path: Path) -> None:
    clip = _write(tmp_path / "lists" / "media" / "a.mp4", b"a")
    listing = tmp_path / "lists" / "mixed.csv"
    listing.write_text("url,title\n# a comment row\nmedia/a.mp4,A\nhttps://example.com/v,V\n")
    (tmp_path / "empty").mkdir()
    rows = plan_sources([str(listing), str(tmp_path / "empty"), str(tmp_path / "nomatch*.mp4")], CONFIG)
    assert [r[Col.SRC_PATH] for r in rows[:1]] == [str(clip.resolve())]
    assert rows[1][Col.SRC_URL] == "https://example.com/v"
    empty = [r for r in rows if r.get(Col.REASON) == "no_media_found"]
    assert {r[Col.INPUT] for r in empty} == {str(tmp_path / "empty"), str(tmp_path / "nomatch*.mp4")}
    assert all(r[Col.STATE] == State.REJECTED and r[Col.STAGE] == "ingest" for r in empty)


def test_a_list_that_includes_itself_is_refused(tmp_path: Path) -> None:
    listing = tmp_path / "loop.txt"
    listing.write_text(f"{listing}\n")
    with pytest.raises(ValueError, match="includes itself"):
        plan_sources([str(listing)], CONFIG)


def test_search_syntax_versus_file_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.inputs import is_search

    assert is_search("ytsearch5:dogs") and is_search("nicosearchdate5:x") and is_search("ytsearchall:x")
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "research:clip.mp4", b"v")
    assert not is_search("research:clip.mp4")  # an existing file wins over search syntax
