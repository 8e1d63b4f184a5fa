"""Benchmark the curation spine (ingest -> probe -> scene_cut -> clip_length -> sound -> cut).

python bench/bench_spine.py --input FOLDER [--output DIR] [--json results.json]
                            [--preset demo] [--make-long-minutes 1 5]

Reports, for a folder of videos:

1. floor: one plain ``ffmpeg -i X -f null -`` per input (video and audio decoded), and the
   seconds of video in the folder (``probe_media``);
2. stages: every active stage (``pipeline.dag.active_stages``, in DAG order) applied
   in-process, no Ray, source by source (``spec.build`` + ``apply_stage`` on one-source
   tables, as a Ray task applies a stage to its batch); throughput in seconds of source video
   per wall second. With ``--preset demo-spine`` that is the spine alone: ingest -> probe ->
   scene_cut (the one decode of each source: its scenes, and every candidate clip with its
   analysis pack) -> clip_length -> sound (loudness read from the pack) -> cut (the encode,
   last, on the clips that passed). A preset that enables the quality filters, such as
   ``demo``, also runs them, on the packs, between sound and cut. Two differences from a Ray
   run: scene_cut runs through ``process`` (a source's clips all at once, not streamed as its
   scenes close), and every pack stays on its row until all stages ran (the pipeline drops a
   row's pack when the row ends, and every pack after its last reader);
3. e2e: ``pipeline.runner.run`` on a local Ray into a fresh output folder;
4. peak memory of the driver and of its child processes for each phase;
5. with ``--make-long-minutes``: one synthetic source per length (hard cut every 20 s), floor
   and stages on each, so a reader can see whether peak memory grows with a source's length.
   In-process it grows with the number of clips wherever the packs hold frames (see 2: every
   clip and its pack are held); the streaming scene_cut's own peak on long sources is
   ``bench_run.py``'s ``memory`` phase.

Every phase runs in a fresh child process (this script with a hidden ``--phase`` flag), so
``ru_maxrss`` and the peak-RSS counters belong to that phase alone. Memory is read from
``/proc``: psutil is not a dependency of the project (Ray 2.60 does not pull it in), and
``/proc`` also gives PSS, which does not double-count pages shared between Ray workers.
Without ``/proc`` (not Linux) only ``resource.getrusage`` numbers are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# One self-contained script (about 510 lines, over the house 400): it re-invokes itself for each
# phase and must run from a checkout without packaging; its sections (memory, media, phases,
# report) are independent and each function stays short.

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as ``python bench/bench_spine.py`` from a checkout
    sys.path.insert(0, str(REPO_ROOT))

SAMPLE_INTERVAL_S = 0.1  # child-tree sampling period: short-lived ffmpeg children last ~0.2 s
SCENE_LEN_S = 20.0  # a hard cut this often in the generated long sources
LONG_SCENES = ("testsrc2", "smptehdbars", "rgbtestsrc")  # alternated so every cut is obvious

# ---- memory ----------------------------------------------------------------------------------

_HAS_PROC = os.path.isdir("/proc/self")
_OWN_CMDLINE = Path("/proc/self/cmdline").read_bytes() if _HAS_PROC else b""


def _status_kb(pid: int | str, key: str) -> int | None:
    """A ``/proc/<pid>/status`` field in KiB (VmRSS, VmHWM), or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _rss_pss_kb(pid: int) -> tuple[int, int] | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    rss = re.search(r"^Rss:\s+(\d+) kB", text, re.MULTILINE)
    pss = re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE)
    return (int(rss.group(1)), int(pss.group(1))) if rss and pss else None


def _descendants(root: int) -> list[int]:
    """Every live process below ``root`` (Ray's gcs/raylet/workers, ffmpeg), from /proc stat."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may contain spaces
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _is_unexeced_fork(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() == _OWN_CMDLINE
    except OSError:
        return True  # already gone


class ChildSampler:
    """Samples this process's descendants in a thread; keeps the peak of their summed RSS and PSS
    and the largest single child (its VmHWM). A child that lives less than one period can be
    missed. ``ru_maxrss`` of RUSAGE_CHILDREN is no substitute: Linux counts a child's pages
    between fork and exec, so it reports at least this process's own RSS."""

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.peak_sum_rss_kb = self.peak_sum_pss_kb = self.peak_one_rss_kb = 0
        self.pids_seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        sum_rss = sum_pss = 0
        for pid in _descendants(os.getpid()):
            if _is_unexeced_fork(pid):
                continue  # caught between fork and exec: our own pages, not the child's
            usage = _rss_pss_kb(pid)
            if usage is None:
                continue
            self.pids_seen.add(pid)
            sum_rss, sum_pss = sum_rss + usage[0], sum_pss + usage[1]
            self.peak_one_rss_kb = max(self.peak_one_rss_kb, usage[0], _status_kb(pid, "VmHWM") or 0)
        self.peak_sum_rss_kb = max(self.peak_sum_rss_kb, sum_rss)
        self.peak_sum_pss_kb = max(self.peak_sum_pss_kb, sum_pss)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> ChildSampler:
        if _HAS_PROC:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if _HAS_PROC:
            self._stop.set()
            self._thread.join()

    def to_json(self) -> dict[str, Any]:
        if not _HAS_PROC:
            return {}
        return {
            "children_peak_sum_rss_mb": _mb(self.peak_sum_rss_kb),
            "children_peak_sum_pss_mb": _mb(self.peak_sum_pss_kb),
            "children_peak_one_rss_mb": _mb(self.peak_one_rss_kb),
            "children_num_seen": len(self.pids_seen),
        }


def _mb(kb: float | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def reset_driver_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0), so a peak is per stage."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def driver_peak_mb() -> float | None:
    """Peak RSS of this process since start or the last :func:`reset_driver_peak`."""
    return _mb(_status_kb("self", "VmHWM") if _HAS_PROC else None)


def rusage_mb() -> dict[str, float | None]:
    """Whole-process peaks from getrusage (KiB on Linux); children are only the reaped ones."""
    return {
        "ru_maxrss_self_mb": _mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        "ru_maxrss_children_mb": _mb(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss),
    }


# ---- media -----------------------------------------------------------------------------------


def make_long_video(dst: Path, minutes: float) -> Path:
    """An N-minute 640x360 25 fps H.264 + AAC video with a hard cut every ``SCENE_LEN_S``."""
    from stages.ffmpeg import run_ffmpeg

    total_s = minutes * 60
    parts = []
    while sum(parts) < total_s - 1e-6:
        parts.append(min(SCENE_LEN_S, total_s - sum(parts)))
    args: list[str] = []
    for i, seconds in enumerate(parts):
        args += ["-f", "lavfi", "-i", f"{LONG_SCENES[i % len(LONG_SCENES)]}=s=640x360:r=25:d={seconds}"]
    n = len(parts)
    args += ["-f", "lavfi", "-i", f"sine=f=440:d={total_s}:r=44100,volume=-12dB"]
    chains = ";".join(f"[{i}:v]format=yuv420p,setsar=1[v{i}]" for i in range(n))
    concat = "".join(f"[v{i}]" for i in range(n)) + f"concat=n={n}:v=1:a=0[v]"
    args += ["-filter_complex", f"{chains};{concat}", "-map", "[v]", "-map", f"{n}:a", "-t", str(total_s)]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(dst)]
    run_ffmpeg(args)
    return dst


def media_files(folder: str) -> list[str]:
    from pipeline.inputs import MEDIA_EXTENSIONS

    return [str(p) for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.suffix.lower() in MEDIA_EXTENSIONS]


def durations_s(paths: list[str], config: Any) -> dict[str, float]:
    """Seconds of video per file from ``probe_media``; 0 for files probe cannot use."""
    from stages.probe import ProbeError, probe_media

    found = {}
    for path in paths:
        try:
            found[os.path.abspath(path)] = float(probe_media(path, config.probe)["probe_duration_s"] or 0.0)
        except ProbeError:
            found[os.path.abspath(path)] = 0.0
    return found


# ---- phases (each runs in its own child process) ----------------------------------------------


def phase_floor(folder: str, config: Any) -> dict[str, Any]:
    """One ``ffmpeg -i X -f null -`` per input: demux + decode of every video and audio frame."""
    from stages.ffmpeg import ffmpeg_exe

    files = media_files(folder)
    seconds = durations_s(files, config)
    per_file, num_errors = {}, 0
    with ChildSampler() as sampler:
        t0 = time.perf_counter()
        for path in files:
            t = time.perf_counter()
            cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", path, "-f", "null", "-"]
            ok = subprocess.run(cmd, capture_output=True, check=False).returncode == 0
            num_errors += not ok
            per_file[os.path.basename(path)] = {"wall_s": time.perf_counter() - t, "ok": ok}
        wall_s = time.perf_counter() - t0
    video_s = sum(seconds.values())
    return {
        "wall_s": wall_s,
        "video_s": video_s,
        "video_s_per_wall_s": video_s / wall_s if wall_s else None,
        "num_files": len(files),
        "num_decode_errors": num_errors,
        "files": per_file,
        "memory": {"driver_peak_mb": driver_peak_mb(), **sampler.to_json(), **rusage_mb()},
    }


def _pending(table: Any, unit: str) -> list[dict[str, Any]]:
    from schemas import Col, State

    return [r for r in table.to_pylist() if r[Col.KIND] == unit and r[Col.STATE] == State.PENDING]


def _counts(tables: list[Any]) -> dict[str, int]:
    from collections import Counter

    from schemas import Col

    counts: Counter[str] = Counter()
    for table in tables:
        for kind, state in zip(table.column(Col.KIND).to_pylist(), table.column(Col.STATE).to_pylist()):
            counts[f"{kind} {'accepted' if state == 'pending' else state}"] += 1
    return dict(sorted(counts.items()))


def plan_tables(folder: str, config: Any) -> list[Any]:
    """One single-source work table per input, as the runner plans them (``plan_sources``)."""
    from pipeline.inputs import plan_sources
    from schemas import WORK_SCHEMA, conform

    return [conform([row], WORK_SCHEMA) for row in plan_sources([folder], config.ingest)]


def run_specs(
    tables: list[Any], specs: list[Any], config: Any, output_dir: str, seconds: dict[str, float]
) -> list[dict[str, Any]]:
    """Apply each stage spec to every table (replaced in place), stage by stage, no Ray; one
    stats dict per stage: rows processed, seconds of video they hold, wall time, memory."""
    from schemas import Col, Kind
    from stages.base import apply_stage

    stages = []
    for spec in specs:
        stage, config_hash = spec.build(config, output_dir), config.stage_hash(spec.name)
        start_mb = _mb(_status_kb("self", "VmRSS") if _HAS_PROC else None)
        reset_driver_peak()
        with ChildSampler() as sampler:
            num_rows, video_s, wall_s = 0, 0.0, 0.0
            for i, table in enumerate(tables):
                rows = _pending(table, spec.unit)  # counted outside the timed call
                num_rows += len(rows)
                if spec.unit == Kind.SOURCE:
                    video_s += sum(seconds.get(r[Col.SRC_PATH] or "", 0.0) for r in rows)
                else:
                    video_s += sum(r[Col.CLIP_DURATION_S] or 0.0 for r in rows)
                t = time.perf_counter()
                tables[i] = apply_stage(stage, table, config_hash)
                wall_s += time.perf_counter() - t
        stages.append(
            {
                "stage": spec.name,
                "unit": spec.unit,
                "num_rows": num_rows,
                "video_s": video_s,
                "wall_s": wall_s,
                "video_s_per_wall_s": video_s / wall_s if wall_s else None,
                "memory": {"driver_start_mb": start_mb, "driver_peak_mb": driver_peak_mb(), **sampler.to_json()},
            }
        )
    return stages


def phase_stages(folder: str, output_dir: str, config: Any) -> dict[str, Any]:
    """Every active stage over every source, stage by stage, in this process: no Ray, no parallelism."""
    from pipeline.dag import active_stages, shed_packs

    seconds = durations_s(media_files(folder), config)
    tables = plan_tables(folder, config)
    specs = active_stages(config)
    stages = run_specs(tables, specs, config, output_dir, seconds)
    tables = [shed_packs(t, keep_pending=False) for t in tables]  # every stage ran: no pack is read again
    video_s, wall_s = sum(seconds.values()), sum(s["wall_s"] for s in stages)
    return {
        "video_s": video_s,
        "wall_s": wall_s,
        "video_s_per_wall_s": video_s / wall_s if wall_s else None,
        "stages": stages,
        "counts": _counts(tables),
        "memory": {key: max((s["memory"].get(key) or 0) for s in stages) for key in stages[0]["memory"]} | rusage_mb(),
    }


def phase_e2e(folder: str, output_dir: str, config: Any) -> dict[str, Any]:
    """``pipeline.runner.run`` on a local Ray, Ray start and shutdown included."""
    from pipeline.runner import run

    seconds = durations_s(media_files(folder), config)
    with ChildSampler() as sampler:
        t0 = time.perf_counter()
        result = run([folder], output_dir, config, show_progress=False)
        wall_s = time.perf_counter() - t0
    video_s = sum(seconds.values())
    counts = {f"{kind} {state}": n for kind, states in result.counts.items() for state, n in states.items()}
    return {
        "wall_s": wall_s,
        "runner_wall_s": result.wall_s,
        "video_s": video_s,
        "video_s_per_wall_s": video_s / wall_s if wall_s else None,
        "counts": dict(sorted(counts.items())),
        "memory": {"driver_peak_mb": driver_peak_mb(), **sampler.to_json(), **rusage_mb()},
    }


# ---- orchestration ---------------------------------------------------------------------------


def run_phase(phase: str, folder: str, output_dir: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; its stderr (Ray's logs) goes to a file beside it."""
    os.makedirs(output_dir, exist_ok=True)
    result_path = os.path.join(output_dir, f"{phase}.result.json")
    cmd = [sys.executable, __file__, "--phase", phase, "--input", folder, "--output", output_dir]
    cmd += ["--preset", args.preset, "--phase-result", result_path]
    with open(os.path.join(output_dir, f"{phase}.stderr.log"), "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = Path(log.name).read_text()[-3000:]
        raise RuntimeError(f"phase {phase} on {folder} exited {proc.returncode}:\n{tail}")
    return json.loads(Path(result_path).read_text())


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def format_report(results: dict[str, Any]) -> str:
    floor, stages, e2e = results["floor"], results["stages"], results["e2e"]
    lines = [
        f"input: {results['input']}  ({floor['num_files']} files, {floor['video_s']:.1f} s of video,"
        f" preset {results['preset']}, {os.cpu_count()} cores)",
        "",
        f"{'phase':<20}{'rows':>6}{'video s':>10}{'wall s':>9}{'video s/s':>11}{'x floor':>9}"
        f"{'driver MB':>11}{'children MB':>13}",
    ]

    def row(name: str, num: Any, r: dict[str, Any], ratio: float | None) -> str:
        mem = r["memory"]
        child = mem.get("children_peak_sum_pss_mb", mem.get("ru_maxrss_children_mb"))
        return (
            f"{name:<20}{num!s:>6}{r['video_s']:>10.1f}{r['wall_s']:>9.2f}{_fmt(r['video_s_per_wall_s']):>11}"
            f"{_fmt(ratio, '.2f'):>9}{_fmt(mem.get('driver_peak_mb')):>11}{_fmt(child):>13}"
        )

    lines.append(row("floor (ffmpeg null)", floor["num_files"], floor, 1.0))
    for s in stages["stages"]:
        lines.append(row(f"  {s['stage']}", s["num_rows"], s, s["wall_s"] / floor["wall_s"]))
    lines.append(row("stages, in-process", "", stages, stages["wall_s"] / floor["wall_s"]))
    lines.append(row("e2e, local Ray", "", e2e, e2e["wall_s"] / floor["wall_s"]))
    lines += [
        "",
        "video s/s: seconds of source video per wall second (clip stages: seconds of the clips they processed)",
        "x floor: phase wall time / floor wall time.  driver MB: peak RSS of the benchmarking process",
        "children MB: peak of the summed PSS of all child processes (Ray workers, raylet, ffmpeg)",
        f"in-process counts: {stages['counts']}",
        f"Ray counts:        {e2e['counts']}",
    ]
    if results.get("long"):
        lines += ["", *format_long(results["long"])]
    return "\n".join(lines)


def format_long(long_runs: dict[str, Any]) -> list[str]:
    """Side by side per length: peak driver RSS and throughput of each in-process stage."""
    runs = list(long_runs.values())
    heads = [f"{m} min MB" for m in long_runs] + [f"{m} min v s/s" for m in long_runs]
    lines = [
        "long sources (one video each, a hard cut every 20 s), in-process stage run in a fresh process",
        f"{'':<24}" + "".join(f"{h:>15}" for h in heads),
        f"{'video s':<24}" + "".join(f"{r['floor']['video_s']:>15.1f}" for r in runs) + f"{'':>15}" * len(runs),
        f"{'floor':<24}"
        + f"{'':>15}" * len(runs)
        + "".join(f"{_fmt(r['floor']['video_s_per_wall_s']):>15}" for r in runs),
    ]
    for i, name in enumerate(s["stage"] for s in runs[0]["stages"]["stages"]):
        stage = [r["stages"]["stages"][i] for r in runs]
        mb = "".join(f"{_fmt(s['memory']['driver_peak_mb']):>15}" for s in stage)
        speed = "".join(f"{_fmt(s['video_s_per_wall_s']):>15}" for s in stage)
        lines.append(f"{'  ' + name:<24}{mb}{speed}")
    child = "".join(f"{_fmt(r['stages']['memory'].get('children_peak_one_rss_mb')):>15}" for r in runs)
    lines += [
        f"{'largest child (ffmpeg)':<24}{child}",
        "MB: peak RSS of the stage process while that stage ran (peak reset before each stage);"
        " stages run in order, so a stage's peak includes what earlier stages left allocated",
    ]
    return lines


def run_all(args: argparse.Namespace, work: str) -> dict[str, Any]:
    folder = os.path.abspath(args.input)
    results: dict[str, Any] = {"input": folder, "preset": args.preset, "num_cpus": os.cpu_count()}
    results["floor"] = run_phase("floor", folder, os.path.join(work, "floor"), args)
    results["stages"] = run_phase("stages", folder, tempfile.mkdtemp(prefix="stages-", dir=work), args)
    results["e2e"] = run_phase("e2e", folder, tempfile.mkdtemp(prefix="e2e-", dir=work), args)
    results["long"] = {}
    for minutes in args.make_long_minutes or []:
        src_dir = tempfile.mkdtemp(prefix=f"long-{minutes:g}min-src-", dir=work)
        t = time.perf_counter()
        make_long_video(Path(src_dir) / f"long_{minutes:g}min.mp4", minutes)
        long_run = {"make_s": time.perf_counter() - t}
        long_run["floor"] = run_phase("floor", src_dir, os.path.join(src_dir + "-out", "floor"), args)
        long_run["stages"] = run_phase("stages", src_dir, src_dir + "-out", args)
        results["long"][f"{minutes:g}"] = long_run
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from pipeline.config import PRESETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="folder of videos (searched recursively)")
    parser.add_argument("--output", help="keep clips, Ray outputs and phase logs here (default: a temp dir)")
    parser.add_argument("--json", help="write every number to this JSON file")
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="config preset (default: demo)")
    parser.add_argument("--make-long-minutes", type=float, nargs="*", metavar="N", help="also bench N-minute sources")
    parser.add_argument("--phase", choices=("floor", "stages", "e2e"), help=argparse.SUPPRESS)  # child process
    parser.add_argument("--phase-result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.phase:
        from pipeline.config import load_config

        config = load_config(args.preset, overrides=["ray.progress_bars=false"])
        phases = {"floor": lambda: phase_floor(args.input, config)}
        phases["stages"] = lambda: phase_stages(args.input, args.output, config)
        phases["e2e"] = lambda: phase_e2e(args.input, args.output, config)
        Path(args.phase_result).write_text(json.dumps(phases[args.phase](), indent=2))
        return
    if not os.path.isdir(args.input):
        raise SystemExit(f"--input must be a folder, got {args.input!r}")
    if args.output:
        os.makedirs(args.output, exist_ok=True)
        results = run_all(args, tempfile.mkdtemp(prefix="bench-", dir=args.output))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-") as work:
            results = run_all(args, work)
    print(format_report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
