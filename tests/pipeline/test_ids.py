import pytest

from pipeline import ids


def test_canonical_url_normalises_what_does_not_name_the_video():
    a = ids.canonical_url("HTTPS://Example.COM:443/watch?v=abc&utm_source=x#t=10")
    b = ids.canonical_url("https://example.com/watch?v=abc")
    assert a == b == "https://example.com/watch?v=abc"
    assert ids.canonical_url("http://h/p?b=2&a=1") == "http://h/p?a=1&b=2"
    assert ids.canonical_url("http://h:8080/p") == "http://h:8080/p"


def test_canonical_url_keeps_what_names_the_video():
    assert ids.source_id_for_url("https://e.com/watch?v=abc") != ids.source_id_for_url("https://e.com/watch?v=abd")


@pytest.mark.parametrize("bad", ["ftp://x/y", "javascript:alert(1)", "not a url", "https://"])
def test_non_http_urls_are_refused(bad):
    with pytest.raises(ValueError):
        ids.canonical_url(bad)


def test_content_id_ignores_the_path(tmp_path):
    a, b, c = tmp_path / "a.mp4", tmp_path / "renamed.mkv", tmp_path / "other.mp4"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    c.write_bytes(b"other bytes")
    ida = ids.source_id_for_content(ids.file_sha256(a))
    assert ida == ids.source_id_for_content(ids.file_sha256(b))
    assert ida != ids.source_id_for_content(ids.file_sha256(c))
    assert ida.startswith("s") and len(ida) == 17


def test_clip_id_depends_on_source_and_frames():
    base = ids.clip_id("s1", 0, 100)
    assert base == ids.clip_id("s1", 0, 100)
    assert len({base, ids.clip_id("s1", 0, 101), ids.clip_id("s1", 1, 100), ids.clip_id("s2", 0, 100)}) == 4
    with pytest.raises(ValueError):
        ids.clip_id("s1", 5, 5)
