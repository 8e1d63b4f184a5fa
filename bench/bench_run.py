"""What a ``javis run`` costs, against floors measured in the same run.

python bench/bench_run.py [--media DIR] [--minutes 5.5 5.5] [--long-minutes 5 60]
                          [--preset default] [--work DIR] [--json FILE] [--skip PHASE ...]

Builds its own input from the real recordings in ``--media`` (``bench/longmedia.py``: 1280x720
30 fps H.264 + AAC, the three real videos under real sounds, repeated): one source per
``--minutes`` value (default two of 5.5 minutes, 11 minutes of video). Then, each phase in a
fresh child process (so its peak-memory counters are its own):

1. ``decode``: the floor ``F_dec``: one ``ffmpeg -i X -f null -`` per source, one after another;
2. ``detect``: scene detection alone (``stages.scene_cut.detect_scenes``), source by source,
   as a ratio to ``F_dec``; and the peer, PySceneDetect's own ``SceneManager`` with its
   ``AdaptiveDetector`` on the same files (its CLI's ``detect-adaptive`` minus the CLI), with
   the share of its cuts ours matches within one frame;
3. ``run``: ``javis run`` (``pipeline.runner.run``, local Ray, ``--preset``) into a fresh folder:
   wall time, peak RSS of the largest process (a Ray worker), encoded vs accepted seconds;
4. ``encode``: the rest of the floor: one x264 encode of the clips the run accepted, at the cut
   stage's settings (``stages.cut.ffmpeg_cut_args``), one after another. ``F = F_dec + encode``;
   the run's target is ``<= 2.0 x F``. The encode reads each clip's span of the source, so it
   includes decoding those seconds again: ``F`` is slightly generous, never tight;
5. ``memory``: the ``scene_cut`` stage (which, since the analysis moved before the encode, is the
   one decode of a source) on one source per ``--long-minutes`` value, each in its own process,
   its peak RSS side by side: flat in the source's length is the target.

Run it against another checkout (e.g. ``git worktree add /tmp/before HEAD~N``) with
``--repo /tmp/before`` to compare: the phases import javis from ``--repo``; the input is built
once in ``--work`` and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
TARGET_RUN_X_F = 2.0
TARGET_DETECT_X_DEC = 1.5
PHASES = ("decode", "detect", "run", "encode", "memory")


# ---- phases (each in its own child process) ---------------------------------------------------


class PeakSampler:
    """The largest peak RSS (VmHWM) among this process's descendants (Ray's workers, FFmpeg),
    read from ``/proc/<pid>/status`` twice a second: cheap enough not to slow the run it
    watches (``bench_spine.ChildSampler`` also sums PSS from ``smaps_rollup``, which costs a
    large share of a core at its 10 Hz on a Ray run)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        import threading

        self.interval_s, self.peak_mb, self.peak_name = interval_s, 0.0, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import bench_spine

        while not self._stop.is_set():
            for pid in bench_spine._descendants(os.getpid()):
                kb = bench_spine._status_kb(pid, "VmHWM") or 0
                if kb / 1024 > self.peak_mb and not bench_spine._is_unexeced_fork(pid):
                    name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                    self.peak_mb, self.peak_name = round(kb / 1024, 1), name[:80]
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def phase_decode(sources: list[str]) -> dict[str, Any]:
    from stages.ffmpeg import ffmpeg_exe

    t0 = time.perf_counter()
    for path in sources:
        cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", path, "-f", "null", "-"]
        subprocess.run(cmd, check=True, capture_output=True)
    return {"wall_s": time.perf_counter() - t0}


def _pyscenedetect_cuts(path: str) -> list[int]:
    from scenedetect import AdaptiveDetector, SceneManager, open_video

    manager = SceneManager()
    manager.add_detector(AdaptiveDetector())
    manager.detect_scenes(video=open_video(path, backend="pyav"), show_progress=False)
    return [start.frame_num for start, _ in manager.get_scene_list(start_in_scene=True)[1:]]


def phase_detect(sources: list[str]) -> dict[str, Any]:
    import bench_spine

    from stages.scene_cut import SceneCutConfig, detect_scenes

    ours, peer = {}, {}
    t0 = time.perf_counter()
    for path in sources:
        ours[path] = [s.start_frame for s in detect_scenes(path, SceneCutConfig())[1:]]
    wall_s = time.perf_counter() - t0
    peak_mb = bench_spine.driver_peak_mb()
    t0 = time.perf_counter()
    for path in sources:
        peer[path] = _pyscenedetect_cuts(path)
    peer_wall_s = time.perf_counter() - t0
    matched = sum(sum(1 for c in peer[p] if any(abs(c - o) <= 1 for o in ours[p])) for p in sources)
    num_peer = sum(len(v) for v in peer.values())
    num_ours = sum(len(v) for v in ours.values())
    return {
        "wall_s": wall_s,
        "peak_mb": peak_mb,
        "peer_wall_s": peer_wall_s,
        "num_cuts": num_ours,
        "num_peer_cuts": num_peer,
        "num_peer_cuts_matched_within_1_frame": matched,
        "num_our_cuts_unmatched": num_ours
        - sum(sum(1 for o in ours[p] if any(abs(c - o) <= 1 for c in peer[p])) for p in sources),
    }


def phase_run(sources: list[str], output_dir: str, preset: str) -> dict[str, Any]:
    import pyarrow.compute as pc

    from pipeline.config import load_config
    from pipeline.outputs import read_ledger
    from pipeline.runner import run
    from schemas import Col, Kind, State

    config = load_config(preset, overrides=["ray.progress_bars=false"])
    folder = tempfile.mkdtemp(prefix="inputs-", dir=output_dir)
    for path in sources:  # the run takes a folder: link the sources into one
        os.symlink(path, os.path.join(folder, os.path.basename(path)))
    with PeakSampler() as sampler:
        t0 = time.perf_counter()
        result = run([folder], os.path.join(output_dir, "out"), config, show_progress=False)
        wall_s = time.perf_counter() - t0
    ledger = read_ledger(result.output_dir)
    clips = ledger.filter(pc.equal(ledger.column(Col.KIND), Kind.CLIP)).to_pylist()
    encoded = [c for c in clips if c[Col.MEDIA_SIZE_BYTES] is not None]
    accepted = [c for c in clips if c[Col.STATE] == State.ACCEPTED]
    ended: dict[str, int] = {}
    for c in clips:
        if c[Col.STATE] != State.ACCEPTED:
            key = f"{c[Col.STAGE]}:{c[Col.REASON] or c[Col.STATE]}"
            ended[key] = ended.get(key, 0) + 1
    return {
        "wall_s": wall_s,
        "num_clips": len(clips),
        "num_encoded": len(encoded),
        "encoded_s": sum(c[Col.CLIP_DURATION_S] for c in encoded),
        "num_accepted": len(accepted),
        "accepted_s": sum(c[Col.CLIP_DURATION_S] for c in accepted),
        "ended": dict(sorted(ended.items())),
        "accepted_spans": [
            [c[Col.SRC_PATH], c[Col.CLIP_START_S], c[Col.CLIP_END_S], c[Col.PROBE_FPS]] for c in accepted
        ],
        "memory": {"largest_process_peak_rss_mb": sampler.peak_mb, "largest_process": sampler.peak_name},
    }


def phase_encode(spans: list[list[Any]], output_dir: str, preset: str) -> dict[str, Any]:
    from pipeline.config import load_config
    from stages.cut import ffmpeg_cut_args
    from stages.ffmpeg import run_ffmpeg

    config = load_config(preset)
    dst = os.path.join(output_dir, "floor_clip.mp4")
    t0 = time.perf_counter()
    for src, start_s, end_s, fps in spans:
        run_ffmpeg(ffmpeg_cut_args(src, dst, start_s, end_s, fps or 25.0, config.cut))
    return {"wall_s": time.perf_counter() - t0, "num_clips": len(spans)}


def phase_memory(source: str, preset: str) -> dict[str, Any]:
    """The scene_cut stage on one source, as a Ray task runs it: each clip row is dropped as it
    leaves. Peak RSS, and the largest RSS seen while the first and the second half of the
    source were decoded (a stage whose memory grows with the length shows it in the second)."""
    import bench_spine

    from pipeline.config import load_config
    from pipeline.dag import STAGE_NAMES, STAGES
    from pipeline.inputs import plan_sources
    from schemas import Col
    from stages.probe import probe_media

    config = load_config(preset)
    row = plan_sources([source], config.ingest)[0]
    row.update(probe_media(source, config.probe))
    half_s = row[Col.PROBE_DURATION_S] / 2
    stage = STAGES[STAGE_NAMES.index("scene_cut")].build(config, tempfile.gettempdir())
    bench_spine.reset_driver_peak()
    t0 = time.perf_counter()
    halves = [0.0, 0.0]
    num_clips = 0
    stream = getattr(stage, "stream", None)  # a checkout from before the streaming scene_cut: all at once
    for item in stream(row) if stream else stage.process(row).children:
        num_clips += 1
        rss_mb = (bench_spine._status_kb("self", "VmRSS") or 0) / 1024
        half = int(item[Col.CLIP_END_S] > half_s)
        halves[half] = max(halves[half], round(rss_mb, 1))
    return {
        "wall_s": time.perf_counter() - t0,
        "peak_mb": bench_spine.driver_peak_mb(),
        "rss_first_half_mb": halves[0],
        "rss_second_half_mb": halves[1],
        "num_clips": num_clips,
    }


# ---- orchestration ---------------------------------------------------------------------------


def run_phase(args: argparse.Namespace, phase: str, payload: dict[str, Any], work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    spec, result = work / f"{phase}.in.json", work / f"{phase}.out.json"
    spec.write_text(json.dumps(payload))
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--repo",
        args.repo,
        "--phase",
        phase,
        "--phase-io",
        str(spec),
        str(result),
    ]
    # PYTHONPATH and the working directory, not sys.path: the Ray workers a run starts must import
    # the same checkout (Ray puts the driver's working directory first on their path)
    repo = str(Path(args.repo).resolve())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, str(BENCH_DIR)])}
    with open(work / f"{phase}.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False, env=env, cwd=repo)
    if proc.returncode:
        raise RuntimeError(f"phase {phase} failed:\n" + (work / f"{phase}.log").read_text()[-3000:])
    return json.loads(result.read_text())


def child_main(args: argparse.Namespace) -> None:
    import stages

    if not Path(stages.__file__).resolve().is_relative_to(Path(args.repo).resolve()):
        raise SystemExit(f"javis imported from {stages.__file__}, not from --repo {args.repo}")
    payload = json.loads(Path(args.phase_io[0]).read_text())
    phases = {
        "decode": lambda: phase_decode(payload["sources"]),
        "detect": lambda: phase_detect(payload["sources"]),
        "run": lambda: phase_run(payload["sources"], payload["output"], payload["preset"]),
        "encode": lambda: phase_encode(payload["spans"], payload["output"], payload["preset"]),
        "memory": lambda: phase_memory(payload["source"], payload["preset"]),
    }
    Path(args.phase_io[1]).write_text(json.dumps(phases[args.phase]()))


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    sys.path[:0] = [str(REPO_ROOT), str(BENCH_DIR)]
    import longmedia

    work = Path(args.work)
    loops = longmedia.make_loops(Path(args.media), work / "media" / "loops")
    sources = []
    for i, minutes in enumerate(args.minutes):
        dst = work / "media" / f"source{i}_{minutes:g}min.mp4"
        if not dst.is_file():
            longmedia.make_source(loops, minutes, dst, first_loop=i)
        sources.append(str(dst))
    tag = Path(args.repo).resolve().name
    out = work / f"phases-{tag}-{time.strftime('%H%M%S')}"
    results: dict[str, Any] = {"repo": args.repo, "preset": args.preset, "sources": sources, "cores": os.cpu_count()}
    skip = set(args.skip or [])
    common = {"sources": sources, "preset": args.preset}
    for phase in ("decode", "detect", "run"):
        if phase not in skip:
            results[phase] = run_phase(args, phase, {**common, "output": str(out / phase)}, out / phase)
    if "encode" not in skip and "run" in results:
        spans = results["run"]["accepted_spans"]
        results["encode"] = run_phase(args, "encode", {**common, "spans": spans, "output": str(out)}, out / "encode")
    if "memory" not in skip:
        results["memory"] = {}
        for minutes in args.long_minutes:
            dst = work / "media" / f"long_{minutes:g}min.mp4"
            if not dst.is_file():
                longmedia.make_source(loops, minutes, dst)
            payload = {"source": str(dst), "preset": args.preset}
            results["memory"][f"{minutes:g}"] = run_phase(args, "memory", payload, out / f"memory-{minutes:g}")
    return results


def format_report(r: dict[str, Any]) -> str:
    lines = [f"repo {r['repo']}  preset {r['preset']}  {r['cores']} cores  {len(r['sources'])} sources"]
    dec = r.get("decode", {}).get("wall_s")
    if dec:
        lines.append(f"F_dec  one plain decode (ffmpeg -f null)      {dec:8.1f} s   1.00x F_dec")
    det = r.get("detect")
    if det and dec:
        share = det["num_peer_cuts_matched_within_1_frame"] / max(1, det["num_peer_cuts"])
        lines += [
            f"scene detection alone (javis)               {det['wall_s']:8.1f} s   {det['wall_s'] / dec:.2f}x F_dec"
            f"   (target <= {TARGET_DETECT_X_DEC}x)",
            f"PySceneDetect SceneManager, AdaptiveDetector {det['peer_wall_s']:7.1f} s   {det['peer_wall_s'] / dec:.2f}x F_dec",
            f"cuts: ours {det['num_cuts']}, PySceneDetect {det['num_peer_cuts']}, theirs matched within one frame"
            f" {share:.1%}, ours without a match {det['num_our_cuts_unmatched']}",
        ]
    run, enc = r.get("run"), r.get("encode")
    if run and enc and dec:
        floor = dec + enc["wall_s"]
        worker = run["memory"]["largest_process_peak_rss_mb"]
        lines += [
            f"encode of the accepted clips (x264, cut settings) {enc['wall_s']:5.1f} s   ({enc['num_clips']} clips)",
            f"F = F_dec + encode                           {floor:8.1f} s",
            f"javis run --preset {r['preset']:<8}                 {run['wall_s']:8.1f} s   {run['wall_s'] / floor:.2f}x F"
            f"   (target <= {TARGET_RUN_X_F}x); largest process peak RSS {worker} MB"
            f" ({run['memory']['largest_process']})",
            f"clips {run['num_clips']}: encoded {run['num_encoded']} ({run['encoded_s']:.1f} s), accepted"
            f" {run['num_accepted']} ({run['accepted_s']:.1f} s): {run['accepted_s'] / max(run['encoded_s'], 1e-9):.1%}"
            " of encoded seconds accepted",
            f"ended: {run['ended']}",
        ]
    if r.get("memory"):
        lines.append("scene_cut stage alone (the one decode of a source, streaming its clips):")
        for minutes, v in r["memory"].items():
            lines.append(
                f"  {minutes:>4} min source: peak RSS {v['peak_mb']} MB; largest RSS while decoding the first half"
                f" {v.get('rss_first_half_mb')} MB, the second half {v.get('rss_second_half_mb')} MB"
                f" ({v['wall_s']:.1f} s, {v['num_clips']} clips)"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    default_media = os.environ.get("JAVIS_MEDIA_DIR", str(REPO_ROOT.parent / "shared" / "media"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", default=default_media, help="the real recordings (default: $JAVIS_MEDIA_DIR)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.5, 5.5], help="one source per value")
    parser.add_argument("--long-minutes", type=float, nargs="*", default=[5, 60], help="memory phase sources")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "javis-bench-run"))
    parser.add_argument("--repo", default=str(REPO_ROOT), help="the javis checkout to measure")
    parser.add_argument("--json", help="write every number here")
    parser.add_argument("--skip", nargs="*", choices=PHASES, help="phases to leave out")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--phase-io", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.phase:
        child_main(args)
        return
    results = run_all(args)
    print(format_report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
