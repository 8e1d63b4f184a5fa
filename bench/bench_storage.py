"""What object storage costs a run, and how the driver's memory grows with the number of sources.

python bench/bench_storage.py [--media DIR] [--work DIR] [--sources 1000 10000] [--json FILE]
                              [--skip s3|scale]

1. ``s3``: the same ``javis run`` (``--preset default``) on the input ``bench_run.py`` builds
   (two 5.5-minute 1280x720 sources from the real recordings), once into a local folder and
   once into an S3-compatible server on 127.0.0.1 (moto's standalone server, started here);
   wall time of each and their ratio. The server runs on the same cores as the run (it is a
   Python process), so the ratio includes its CPU: a real object store costs the machine less
   and the network more.
2. ``scale``: the driver's peak RSS with N planned sources, for each ``--sources`` value: N
   unique 2.5 s 64x64 H.264 + AAC files (one encode, then copies that differ in a metadata
   byte range, so every file has its own content id), curated with ``--preset demo-spine``
   into a local folder. Every source is planned, ingested, probed, cut into one clip, encoded,
   verified at the end and written to the outputs: the planner, the staging and the final
   verification all run at that size. Reports the driver's peak RSS (VmHWM of the run's own
   process) and the largest Ray worker's.

Each run is a fresh ``python -m pipeline.cli run`` process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(REPO_ROOT), str(BENCH_DIR)]

import bench_spine  # noqa: E402
import longmedia  # noqa: E402

TITLE = b"javis-bench-source-000000"  # replaced in each copy by an index of the same length


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Peaks:
    """Peak RSS (VmHWM) of one process and the largest of its descendants, read twice a second."""

    def __init__(self, pid: int) -> None:
        self.pid, self.driver_mb, self.largest_child_mb = pid, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            own = bench_spine._status_kb(self.pid, "VmHWM")
            if own:
                self.driver_mb = max(self.driver_mb, own / 1024)
            for child in bench_spine._descendants(self.pid):
                kb = bench_spine._status_kb(child, "VmHWM") or 0
                self.largest_child_mb = max(self.largest_child_mb, kb / 1024)
            self._stop.wait(0.5)

    def __enter__(self) -> _Peaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def javis_run(inputs: str, output: str, preset: str, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "-i", inputs, "-o", output, "--preset", preset, "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **env, "RAY_AUTH_MODE": "disabled"}, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    with _Peaks(proc.pid) as peaks:
        out, err = proc.communicate()
    wall_s = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"javis run failed:\n{err[-3000:]}")
    return {
        "wall_s": round(wall_s, 2),
        "driver_peak_mb": round(peaks.driver_mb, 1),
        "largest_worker_peak_mb": round(peaks.largest_child_mb, 1),
        "summary": out.strip().splitlines()[-2] if out.strip() else "",
    }


def s3_phase(media: Path, work: Path) -> dict[str, Any]:
    loops = longmedia.make_loops(media, work / "media" / "loops")
    folder = work / "s3-inputs"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        dst = work / "media" / f"source{i}_5.5min.mp4"
        if not dst.is_file():
            longmedia.make_source(loops, 5.5, dst, first_loop=i)
        link = folder / dst.name
        if not link.exists():
            link.symlink_to(dst)
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        import pyarrow.fs as pafs

        os.environ.update(env)
        for _ in range(100):
            try:
                pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True).create_dir("bench")
                break
            except OSError:
                time.sleep(0.2)
        shutil.rmtree(work / "out-local", ignore_errors=True)  # a fresh run, not a resume of the last one
        local = javis_run(str(folder), str(work / "out-local"), "default", {})
        s3 = javis_run(str(folder), f"s3://bench/run-{int(time.time())}", "default", env)
    finally:
        server.terminate()
        server.wait()
    return {"local": local, "s3": s3, "s3_over_local": round(s3["wall_s"] / local["wall_s"], 3)}


def make_sources(folder: Path, count: int) -> None:
    """``count`` unique tiny videos: one encode, then copies differing in the title bytes."""
    from stages.ffmpeg import run_ffmpeg

    folder.mkdir(parents=True, exist_ok=True)
    base = folder.parent / "base.mp4"
    if not base.is_file():
        run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=s=64x64:r=25:d=2.5", "-f", "lavfi", "-i", "sine=d=2.5",
                    "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-metadata", f"title={TITLE.decode()}",
                    str(base)])  # fmt: skip
    data = base.read_bytes()
    at = data.index(TITLE)
    for i in range(count):
        tag = TITLE[:-6] + b"%06d" % i
        path = folder / f"v{i:06d}.mp4"
        if not path.exists():
            path.write_bytes(data[:at] + tag + data[at + len(TITLE) :])


def scale_phase(work: Path, counts: list[int]) -> dict[str, Any]:
    results = {}
    for count in counts:
        folder = work / f"tiny-{count}" / "videos"
        make_sources(folder, count)
        out = work / f"tiny-{count}" / "out"
        shutil.rmtree(out, ignore_errors=True)
        results[str(count)] = javis_run(str(folder), str(out), "demo-spine", {})
        manifest = json.loads((out / "manifest.json").read_text())
        results[str(count)]["counts"] = manifest["counts"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--media", default=os.environ.get("JAVIS_MEDIA_DIR", str(REPO_ROOT.parent / "shared" / "media"))
    )
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "javis-bench-storage"))
    parser.add_argument("--sources", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--skip", nargs="*", choices=("s3", "scale"), default=[])
    parser.add_argument("--json")
    args = parser.parse_args()
    work = Path(args.work)
    results: dict[str, Any] = {"cores": os.cpu_count()}
    if "s3" not in args.skip:
        results["s3"] = s3_phase(Path(args.media), work)
        r = results["s3"]
        print(f"javis run, 11 min of 720p, --preset default: local folder {r['local']['wall_s']} s, "
              f"S3-compatible server {r['s3']['wall_s']} s: {r['s3_over_local']}x")  # fmt: skip
    if "scale" not in args.skip:
        results["scale"] = scale_phase(work, args.sources)
        for count, r in results["scale"].items():
            print(f"{count:>6} sources: {r['wall_s']} s, driver peak RSS {r['driver_peak_mb']} MB, "
                  f"largest worker {r['largest_worker_peak_mb']} MB, {r['counts']}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
