"""A URL list is untrusted text: hostile entries and hostile servers each end in one terminal
record with a reason, nothing is written outside the output folder, and the run goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.inputs import list_entry_refusal, plan_sources
from schemas import Col, State
from stages.ingest import IngestConfig
from tests.stages.test_download import _State, clip, server  # noqa: F401 (fixtures)

HOSTILE_ENTRIES = {  # entry -> reason at ingest
    "file:///etc/passwd": "unsupported_url",
    "ftp://127.0.0.1:1/clip.mp4": "unsupported_url",
    "javascript:alert(document.cookie)": "unsupported_url",
    "data:video/mp4;base64,AAAA": "unsupported_url",
    "../../etc/passwd": "outside_list_folder",
    "/etc/passwd": "outside_list_folder",
}


@pytest.mark.parametrize(("entry", "reason"), sorted(HOSTILE_ENTRIES.items()))
def test_hostile_list_entries_are_rejected_at_planning(entry: str, reason: str, tmp_path: Path) -> None:
    listing = tmp_path / "lists" / "urls.txt"
    listing.parent.mkdir()
    listing.write_text(f"https://example.com/v/1\n{entry}\n")
    rows = plan_sources([str(listing)], IngestConfig())
    assert len(rows) == 2 and rows[0][Col.STATE] == State.PENDING
    bad = rows[1]
    assert (bad[Col.STATE], bad[Col.STAGE], bad[Col.REASON]) == (State.REJECTED, "ingest", reason)
    assert bad[Col.DETAIL] and bad.get(Col.SRC_PATH) is None and bad.get(Col.SRC_URL) is None


def test_list_entries_that_are_followed(tmp_path: Path) -> None:
    listing = str(tmp_path / "urls.txt")
    (tmp_path / "clip:1.mp4").write_bytes(b"v")  # a file name that looks like a scheme
    for entry in ("https://example.com/a", "ytsearch3:dogs", "s3://bucket/a.mp4", str(tmp_path / "sub" / "a.mp4"),
                  "clip:1.mp4"):  # fmt: skip
        assert list_entry_refusal(entry, listing) is None, entry
    assert list_entry_refusal(str(tmp_path / "sub" / ".." / ".." / "x.mp4"), listing) is not None


def test_a_url_list_of_good_and_hostile_entries_runs_end_to_end(
    server: _State,  # noqa: F811
    ray_local,
    tmp_path: Path,
) -> None:
    from pipeline.config import load_config
    from pipeline.outputs import read_ledger
    from pipeline.runner import run

    lists = tmp_path / "work" / "lists"
    lists.mkdir(parents=True)
    served = {  # name on the server -> (state, reason) of its source
        "clip.mp4": (State.ACCEPTED, None),
        "fake.mp4": (State.REJECTED, "not_media"),
        "huge.mp4": (State.REJECTED, "filtered"),
        "loop-a": (State.FAILED, None),
        "down.mp4": (State.FAILED, None),
        "truncated.mp4": (State.FAILED, None),
    }
    entries = [server.url(name) for name in served] + list(HOSTILE_ENTRIES)
    listing = lists / "urls.txt"
    listing.write_text("\n".join(entries) + "\n")
    before = {p for p in tmp_path.rglob("*")}
    out = tmp_path / "out"
    config = load_config("demo-spine", overrides=["ray.progress_bars=false", "ingest.retries=1",
                                                  "ingest.timeout_s=60", "ingest.max_filesize_mb=1"])  # fmt: skip
    result = run([str(listing)], out, config, show_progress=False)

    sources = {r[Col.INPUT]: r for r in read_ledger(result.output_dir).to_pylist() if r[Col.KIND] == "source"}
    assert len(sources) == len(entries)  # every entry accounted for, once
    for name, expected in served.items():
        row = sources[server.url(name)]
        assert (row[Col.STATE], row[Col.REASON]) == expected, (name, row)
        if row[Col.STATE] == State.FAILED:
            assert row[Col.STAGE] == "ingest" and row[Col.ERROR_MESSAGE]
    hostile = {k: v for k, v in sources.items() if k not in {server.url(name) for name in served}}
    got = sorted((r[Col.STATE], r[Col.REASON]) for r in hostile.values())
    assert got == sorted((State.REJECTED, reason) for reason in HOSTILE_ENTRIES.values())
    assert sum(result.counts["source"].values()) == len(entries)
    written = {p for p in tmp_path.rglob("*")} - before
    assert all(out in p.parents or p == out for p in written), sorted(written)
    raw = sorted(p.name for p in (out / "media" / "raw").iterdir())
    assert all(name.split(".")[0] == sources[server.url("clip.mp4")][Col.ID] for name in raw)
