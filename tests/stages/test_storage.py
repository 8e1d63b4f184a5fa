"""Storage on a local folder and on an S3-compatible server; the node-local source cache."""

import os
import pickle

import pyarrow as pa
import pytest

from stages.storage import Storage, is_uri, local_copy


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return Storage(tmp_path / "out")
    request.getfixturevalue("s3_server")
    return Storage(f"s3://javis-test/{tmp_path.name}/out")


def test_uris_and_paths():
    assert is_uri("s3://bucket/x") and is_uri("gs://b") and is_uri("memory://x")
    assert not is_uri("/data/out") and not is_uri("out/run1") and not is_uri("file:///data/out")
    assert Storage("file:///tmp/x").local_path("a/b") == "/tmp/x/a/b"
    with pytest.raises(ValueError, match="in the environment"):  # they would end up in manifests and logs
        Storage("s3://AKIAKEY:secret@bucket/out")


def test_write_read_list_delete(storage):
    storage.write_bytes("a/b/one.bin", b"123")
    storage.write_json("manifest.json", {"k": [1, 2]})
    size = storage.write_parquet(pa.table({"x": [1, 2, 3]}), "shards/shard-1.parquet")
    assert storage.size("a/b/one.bin") == 3 and storage.size("nope") is None and size > 0
    assert storage.read_bytes("a/b/one.bin") == b"123" and storage.read_json("manifest.json") == {"k": [1, 2]}
    assert storage.read_parquet("shards/shard-1.parquet").column("x").to_pylist() == [1, 2, 3]
    assert storage.list_files() == ["a/b/one.bin", "manifest.json", "shards/shard-1.parquet"]
    assert storage.list_files("shards") == ["shards/shard-1.parquet"] and storage.list_files("missing") == []
    storage.delete("a/b/one.bin")
    storage.delete("a/b/one.bin")  # already gone: fine
    storage.delete_dir("shards")
    assert storage.list_files() == ["manifest.json"]
    if storage.is_local:  # no temporary file is left behind by the atomic writes
        assert not [p for p in os.listdir(storage.base) if p.startswith(".")]


def test_put_and_get_files(storage, tmp_path):
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"x" * 1000)
    storage.put_file(src, "media/clips/c.mp4")
    assert src.exists() and storage.size("media/clips/c.mp4") == 1000
    storage.put_file(src, "media/clips/d.mp4", move=True)
    assert not src.exists() and storage.read_bytes("media/clips/d.mp4") == b"x" * 1000
    storage.get_file("media/clips/d.mp4", tmp_path / "back.mp4")
    assert (tmp_path / "back.mp4").read_bytes() == b"x" * 1000
    location = storage.location("media/clips/d.mp4")
    assert location.startswith("s3://") != storage.is_local
    again = pickle.loads(pickle.dumps(storage))  # what a Ray worker receives
    assert again.root == storage.root and again.size("media/clips/d.mp4") == 1000


def test_sources_on_object_storage_are_fetched_once_per_node_and_evicted(s3_server, tmp_path):
    store = Storage(f"s3://javis-test/{tmp_path.name}/in")
    for name in ("a.mp4", "b.mp4"):
        store.write_bytes(name, name.encode() * 100)
    scratch = tmp_path / "scratch"
    with local_copy(store.location("a.mp4"), scratch, max_cache_bytes=700) as first:
        assert open(first, "rb").read() == b"a.mp4" * 100
        with local_copy(store.location("a.mp4"), scratch, max_cache_bytes=700) as again:
            assert again == first  # the same node copy, not a second download
    assert os.path.exists(first)  # kept for the next stage on this node
    with local_copy(store.location("b.mp4"), scratch, max_cache_bytes=700) as second:
        assert os.path.exists(second)
    assert not os.path.exists(first) and os.path.exists(second)  # over the cap: the older one went
    with local_copy(str(tmp_path / "x.mp4"), scratch) as local:
        assert local == str(tmp_path / "x.mp4")  # a local path is used in place
