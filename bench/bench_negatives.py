"""Benchmark hard-negative synthesis (``javis augment``'s per-clip work) in one process, per core.

python bench/bench_negatives.py --input FOLDER [--real-media DIR] [--json FILE] [--repeats 1]
                                [--preset demo]

The spine runs in-process first (``bench_filters.spine_clips``, no Ray: ingest -> probe ->
scene_cut -> clip_length -> sound -> cut, no quality filter) to encode the clips: every clip that
passes the sound check is cut. Then, on the clips cut accepts (their rows without the transient
analysis pack, as ``javis augment`` reads them from the outputs), with the default ``AugmentConfig``
(frames at most 256 px, hpss, opencv_mog2, 2 donors), one clip after another:

1. metadata: ``clip_metadata`` (pass 1 of augment): load_clip, separation, trajectory extraction,
   trajectory encoding; seconds per clip second;
2. context: ``build_context`` with the donors and trajectory pool the runner would give it
   (``pick_donors``, ``pool_for``, the pool from step 1): load_clip, separation, the source
   audio window, the donors' audio and their separation, decoding the pool;
3. operations: EVERY operation of ``video_ops.OPS + audio_ops.OPS`` on every clip, not only
   the one a family draws: draw + ``apply_drawn``, then ``write_clip`` (numpy RGB -> YUV, then
   the FFmpeg encode) and ``measure_clip`` (the A/V check ``clip_negatives`` does). An operation
   that raises ``MissingInput`` counts as not applicable to that clip. A family's negatives/s =
   1 / the mean draw + apply + write time of its operations (the mean over the operations that
   apply to a clip, then over the clips: the sampler picks uniformly among the applicable ones);
4. per-clip set: ``clip_negatives`` as the pipeline runs it (one negative per family), end to
   end, with and without the context and metadata.

Single process, clip after clip: the numbers are per core. OpenMP/OpenBLAS/MKL are limited to
one thread (unless already set in the environment) and OpenCV too (after the spine), so they are
what one Ray task (``num_cpus=1``) gets on a loaded node; PyAV's video decoder still uses its own
threads, so the report gives CPU seconds (this process's threads plus the FFmpeg children) per
wall second for each step. Every measurement is repeated ``--repeats`` times, interleaved, and
the fastest is kept per clip and per item. ``--real-media DIR`` (default ``$JAVIS_MEDIA_DIR``)
also benches clips of two real videos built in a temp dir (``bench_filters.make_real_media``).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy is imported
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

# One self-contained script (about 440 lines, over the house 400), like bench_filters.py: it runs
# from a checkout without packaging; its sections (timing, measurements, summary, report) are
# independent and each function stays short.

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "bench"):  # run as ``python bench/bench_negatives.py`` from a checkout
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import bench_filters  # noqa: E402
import numpy as np  # noqa: E402

import augment.build as build  # noqa: E402
import augment.media as media  # noqa: E402
from augment.build import AugmentConfig, build_context, clip_metadata, clip_negatives, pick_donors, pool_for  # noqa: E402
from augment.context import FAMILIES, ClipContext, MissingInput, OpSpec  # noqa: E402
from augment.negatives import Drawn, apply_drawn, family_seed  # noqa: E402
from pipeline.dag import shed_packs  # noqa: E402
from schemas import Col, NegCol  # noqa: E402
from stages.cut import measure_clip  # noqa: E402

log = logging.getLogger("bench_negatives")

OPS: tuple[OpSpec, ...] = build.OPS  # video_ops.OPS + audio_ops.OPS, as clip_negatives uses them
META_PARTS = {"load_clip": "load_clip", "separate_sources": "separation", "extract_trajectories": "trajectories"}
META_PARTS |= {"encode_trajectory": "encode trajectories"}
CONTEXT_PARTS = ("load_clip", "separation", "source audio window", "donor audio", "donor separation", "pool decode")
SET_PARTS = {"draw_negatives": "draw", "apply_drawn": "apply", "write_clip": "write", "measure_clip": "check"}

# ---- timing -----------------------------------------------------------------------------------


def _cpu_s() -> float:
    """CPU seconds of this process (all threads) and of its waited children (FFmpeg)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Clock:
    """Wall and CPU seconds of a block, summed over every time the block is entered."""

    def __init__(self) -> None:
        self.wall_s = self.cpu_s = 0.0

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), _cpu_s()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s += time.perf_counter() - self._wall
        self.cpu_s += _cpu_s() - self._cpu

    def to_json(self) -> dict[str, float]:
        return {"wall_s": self.wall_s, "cpu_s": self.cpu_s}


@contextlib.contextmanager
def spy(module: Any, names: list[str]) -> Iterator[dict[str, list[float]]]:
    """Replace ``module.<name>`` by a wrapper that records each call's wall seconds, in call
    order; the callers look the names up at call time, so their own code runs unchanged."""
    calls: dict[str, list[float]] = {name: [] for name in names}
    originals = {name: getattr(module, name) for name in names}

    def wrap(name: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                calls[name].append(time.perf_counter() - t)

        return timed

    for name, fn in originals.items():
        setattr(module, name, wrap(name, fn))
    try:
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)


# ---- measurements (one repeat each) -----------------------------------------------------------


def time_metadata(row: dict[str, Any], out: Path, config: AugmentConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    with spy(build, list(META_PARTS)) as calls, Clock() as clock:
        meta = clip_metadata(row, out, config)
    parts = {label: sum(calls[name]) for name, label in META_PARTS.items()}
    return meta, {**parts, "total": clock.wall_s, "num_objects": len(meta["trajectories"])}


def time_context(
    row: dict[str, Any], out: Path, config: AugmentConfig, donors: list[dict], pool: list[bytes]
) -> tuple[ClipContext, dict[str, Any]]:
    """build_context; its first load_audio_window / separate_sources call is the clip's own (the
    source window, the clip's audio), the later ones are the donors'."""
    names = ["load_clip", "separate_sources", "load_audio_window", "decode_trajectory"]
    with spy(build, names) as calls, Clock() as clock:
        ctx = build_context(row, out, config, donors, pool)
    windows, separations = calls["load_audio_window"], calls["separate_sources"]
    parts = dict(zip(CONTEXT_PARTS, (sum(calls["load_clip"]), separations[0], windows[0])))
    parts |= {"donor audio": sum(windows[1:]), "donor separation": sum(separations[1:])}
    parts |= {"pool decode": sum(calls["decode_trajectory"])}
    sizes = {"num_donor_sources": len(ctx.donor_sources or []), "num_pool": len(ctx.trajectories or [])}
    return ctx, {**parts, "total": clock.wall_s, **sizes}


def time_op(ctx: ClipContext, op: OpSpec, config: AugmentConfig) -> dict[str, Any]:
    """Draw (seeded per clip and operation), apply, write and check one negative of ``op``."""
    seed = family_seed(config.seed, ctx.clip_id, op.name)
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    try:
        params = op.draw(ctx, rng)
    except MissingInput as e:
        return {"applicable": False, "reason": str(e), "draw_s": time.perf_counter() - t}
    t1 = time.perf_counter()
    frames, audio = apply_drawn(ctx, Drawn(op.family, op.name, params, seed), OPS)
    t2 = time.perf_counter()
    with spy(media, ["rgb_to_yuv420p", "run_ffmpeg"]) as calls:
        data = media.write_clip(frames, ctx.fps, audio, ctx.rate_hz, config.crf)
    t3 = time.perf_counter()
    measure_clip(data)
    t4 = time.perf_counter()
    return {
        "applicable": True,
        "draw_s": t1 - t,
        "apply_s": t2 - t1,
        "write_s": t3 - t2,
        "yuv_s": sum(calls["rgb_to_yuv420p"]),
        "ffmpeg_s": sum(calls["run_ffmpeg"]),
        "check_s": t4 - t3,
        "size_bytes": len(data),
    }


def time_set(ctx: ClipContext, row: dict[str, Any], out: Path, config: AugmentConfig) -> dict[str, Any]:
    """clip_negatives as the pipeline runs it: one negative per family, stored under ``out``."""
    with spy(build, list(SET_PARTS)) as calls, Clock() as clock:
        negatives, skipped = clip_negatives(ctx, row, out, config)
    parts = {label: sum(calls[name]) for name, label in SET_PARTS.items()}
    ops = {n[NegCol.FAMILY]: n[NegCol.OPERATION] for n in negatives}
    return {**parts, "total": clock.wall_s, "num_negatives": len(negatives), "ops": ops, "skipped": skipped}


def measure_once(clips: list[Any], out: Path, config: AugmentConfig) -> dict[str, Any]:
    rows = {c.id: shed_packs(c.table, keep_pending=False).to_pylist()[0] for c in clips}  # as augment reads them
    run: dict[str, Any] = {"metadata": {}, "context": {}, "ops": {}, "set": {}}
    metas, clocks = {}, {name: Clock() for name in ("metadata", "context", "operations", "set")}
    with clocks["metadata"]:
        for clip_id, row in rows.items():
            metas[clip_id], run["metadata"][clip_id] = time_metadata(row, out, config)
    pool = [(clip_id, t) for clip_id, m in sorted(metas.items()) for t in m["trajectories"]]  # as the runner
    refs = {k: {Col.MEDIA_PATH: r[Col.MEDIA_PATH], Col.MEDIA_BYTES: r[Col.MEDIA_BYTES]} for k, r in rows.items()}
    for clip_id, row in rows.items():
        donors = [{Col.ID: d, **refs[d]} for d in pick_donors(clip_id, sorted(refs), config)]
        with clocks["context"]:
            ctx, run["context"][clip_id] = time_context(row, out, config, donors, pool_for(clip_id, pool, config))
        with clocks["operations"]:
            run["ops"][clip_id] = {op.name: time_op(ctx, op, config) for op in OPS}
        with clocks["set"]:
            run["set"][clip_id] = time_set(ctx, row, out, config)
        run["context"][clip_id]["frames"] = list(ctx.frames.shape)
    return {**run, "phases": {name: c.to_json() for name, c in clocks.items()}}


def fastest(runs: list[Any]) -> Any:
    """Per numeric leaf, the smallest over the repeats (noise on a shared VM only adds time);
    anything else (flags, names, counts) from the first repeat."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: fastest([r[k] for r in runs]) for k in first}
    if isinstance(first, float):
        return min(runs)
    return first


# ---- summary ----------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarize(best: dict[str, Any], durations: dict[str, float]) -> dict[str, Any]:
    clip_s = sum(durations.values())
    per_clip = {
        section: {part: sum(best[section][c][part] for c in durations) for part in [*parts, "total"]}
        for section, parts in (("metadata", META_PARTS.values()), ("context", CONTEXT_PARTS))
    }
    ops = {}
    for op in OPS:
        done = {c: best["ops"][c][op.name] for c in durations if best["ops"][c][op.name]["applicable"]}
        reasons = Counter(best["ops"][c][op.name]["reason"] for c in durations if c not in done)
        cost = [e["draw_s"] + e["apply_s"] + e["write_s"] for e in done.values()]
        ops[op.name] = {
            "family": op.family,
            "built": len(done),
            "not_applicable": len(durations) - len(done),
            "not_applicable_reasons": dict(reasons),
            **{f"mean_{k}": _mean([e[k] for e in done.values()]) for k in ("draw_s", "apply_s", "write_s")},
            **{f"mean_{k}": _mean([e[k] for e in done.values()]) for k in ("yuv_s", "ffmpeg_s", "check_s")},
            "mean_s": _mean(cost),
            "negatives_per_s": 1 / _mean(cost) if cost else None,
            "s_per_clip_s": sum(cost) / sum(durations[c] for c in done) if done else None,
        }
    families = {}
    for family in FAMILIES:
        names = [op.name for op in OPS if op.family == family]
        expected = []  # per clip: the mean over the family's applicable operations
        for c in durations:
            costs = [e["draw_s"] + e["apply_s"] + e["write_s"] for n in names if (e := best["ops"][c][n])["applicable"]]
            expected += [statistics.fmean(costs)] if costs else []
        mean_s = _mean(expected)
        families[family] = {
            "ops": names,
            "clips_with_negative": len(expected),
            "mean_s": mean_s,
            "negatives_per_s": 1 / mean_s if mean_s else None,
        }
    sets = best["set"]
    num = sum(s["num_negatives"] for s in sets.values())
    neg_s = sum(s["total"] for s in sets.values())
    ctx_s, meta_s = per_clip["context"]["total"], per_clip["metadata"]["total"]
    whole = {
        "num_negatives": num,
        "parts_s": {part: sum(s[part] for s in sets.values()) for part in [*SET_PARTS.values(), "total"]},
        "negatives_per_s": num / neg_s,
        "negatives_per_s_with_context": num / (neg_s + ctx_s),
        "negatives_per_s_with_context_and_metadata": num / (neg_s + ctx_s + meta_s),
        "clip_s_per_s_with_context_and_metadata": clip_s / (neg_s + ctx_s + meta_s),
        "operations": dict(Counter(f"{f}/{o}" for s in sets.values() for f, o in s["ops"].items())),
        "skipped": dict(Counter(f for s in sets.values() for f in s["skipped"])),
    }
    return {"clip_s": clip_s, "sections": per_clip, "ops": ops, "families": families, "set": whole}


def bench_input(name: str, folder: str, config: Any, work: str, augment: AugmentConfig, repeats: int) -> dict:
    import cv2

    output_dir = tempfile.mkdtemp(prefix="out-", dir=work)
    log.info("%s: spine in-process on %s", name, folder)
    cv2.setNumThreads(max(1, os.cpu_count() or 1))  # the spine as bench_filters runs it
    clips, spine = bench_filters.spine_clips(folder, config, output_dir)
    if not clips:
        raise SystemExit(f"the spine accepted no clip from {folder}")
    cv2.setNumThreads(1)  # augment: one core
    runs = []
    for i in range(repeats):
        log.info("%s: repeat %d of %d on %d clips", name, i + 1, repeats, len(clips))
        runs.append(measure_once(clips, Path(output_dir), augment))
    best = fastest(runs)
    durations = {c.id: c.duration_s for c in clips}
    frames = Counter("x".join(map(str, best["context"][c.id]["frames"][2:0:-1])) for c in clips)
    return {
        "name": name,
        "folder": folder,
        "spine": spine,
        "num_clips": len(clips),
        "clip_sizes": dict(Counter(c.size for c in clips)),
        "negative_sizes": dict(frames),
        "best": best,
        "summary": summarize(best, durations),
        "runs": runs,
    }


# ---- report -----------------------------------------------------------------------------------


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_report(result: dict[str, Any]) -> str:
    summary, best, n = result["summary"], result["best"], result["num_clips"]
    clip_s, phases, spine = summary["clip_s"], best["phases"], result["spine"]
    sizes = ", ".join(f"{k} x {v}" for v, k in result["clip_sizes"].items())
    neg_sizes = ", ".join(f"{k} x {v}" for v, k in result["negative_sizes"].items())
    lines = [
        f"== {result['name']}: {result['folder']}",
        f"spine in-process: {spine['num_sources']} sources, {spine['video_s']:.1f} s, {spine['wall_s']:.1f} s"
        f" -> {n} clips accepted, {clip_s:.1f} s ({sizes}); negatives at {neg_sizes}",
        "",
        f"{'step (sums over the clips)':<40}{'wall s':>9}{'s/clip-s':>10}{'ms/clip':>9}{'cpu/wall':>10}",
    ]
    for section, title in (("metadata", "1. metadata (clip_metadata)"), ("context", "2. context (build_context)")):
        parts = summary["sections"][section]
        ratio = phases[section]["cpu_s"] / phases[section]["wall_s"]
        for part, wall_s in parts.items():
            label, cpu = (title, f"{ratio:.2f}") if part == "total" else (f"     {part}", "")
            lines.append(f"{label:<40}{wall_s:>9.2f}{wall_s / clip_s:>10.4f}{1000 * wall_s / n:>9.0f}{cpu:>10}")
    ratio = phases["operations"]["cpu_s"] / phases["operations"]["wall_s"]
    lines += [
        "",
        f"3. every operation on every clip (cpu/wall {ratio:.2f}); ms per negative, means over the clips it built",
        f"{'operation':<20}{'family':<16}{'built':>6}{'n/a':>5}{'draw':>7}{'apply':>7}{'write':>7}{'(yuv':>7}"
        f"{'ffmpeg)':>8}{'check':>7}{'neg/s':>7}{'s/clip-s':>10}",
    ]
    for name, o in summary["ops"].items():
        ms = [_f(o[f"mean_{k}"] and 1000 * o[f"mean_{k}"], ".0f") for k in ("draw_s", "apply_s", "write_s")]
        ms += [_f(o[f"mean_{k}"] and 1000 * o[f"mean_{k}"], ".0f") for k in ("yuv_s", "ffmpeg_s", "check_s")]
        lines.append(
            f"{name:<20}{o['family']:<16}{o['built']:>6}{o['not_applicable']:>5}"
            + "".join(f"{m:>7}" for m in ms[:4])
            + f"{ms[4]:>8}{ms[5]:>7}{_f(o['negatives_per_s'], '.2f'):>7}{_f(o['s_per_clip_s'], '.4f'):>10}"
        )
    for name, o in summary["ops"].items():
        if o["not_applicable"]:  # one example: the reasons differ only in their numbers
            lines.append(f"  n/a {name} x {o['not_applicable']}, e.g. {next(iter(o['not_applicable_reasons']))}")
    lines += ["", f"{'family (per core)':<20}{'clips':>6}{'s/negative':>12}{'negatives/s':>13}"]
    for family, f in summary["families"].items():
        lines.append(
            f"{family:<20}{f['clips_with_negative']:>6}{_f(f['mean_s'], '.3f'):>12}{_f(f['negatives_per_s'], '.2f'):>13}"
        )
    s = summary["set"]
    parts = ", ".join(f"{k} {v:.2f}" for k, v in s["parts_s"].items())
    ratio = phases["set"]["cpu_s"] / phases["set"]["wall_s"]
    lines += [
        "",
        f"4. per-clip set (clip_negatives, one per family): {s['num_negatives']} negatives from {n} clips,"
        f" cpu/wall {ratio:.2f}; seconds: {parts}",
        f"   negatives/s per core: {s['negatives_per_s']:.2f} (negatives only),"
        f" {s['negatives_per_s_with_context']:.2f} (+ context),"
        f" {s['negatives_per_s_with_context_and_metadata']:.2f} (+ context + metadata:"
        f" {s['clip_s_per_s_with_context_and_metadata']:.2f} clip s/s)",
        f"   drawn: {s['operations']}" + (f"; skipped families: {s['skipped']}" if s["skipped"] else ""),
    ]
    return "\n".join(lines)


# ---- CLI --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return bench_filters.bench_parser(__doc__, default_repeats=1).parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("pyscenedetect").setLevel(logging.WARNING)
    if not os.path.isdir(args.input):
        raise SystemExit(f"--input must be a folder, got {args.input!r}")
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    from pipeline.config import load_config

    config = load_config(args.preset, overrides=["ray.progress_bars=false"])
    augment = AugmentConfig()
    t0, load_before = time.perf_counter(), os.getloadavg()[0]
    threads = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    results: dict[str, Any] = {"preset": args.preset, "num_cpus": os.cpu_count(), "repeats": args.repeats}
    results |= {"threads": threads, "augment": {"max_side": augment.max_side, "crf": augment.crf}}
    with tempfile.TemporaryDirectory(prefix="bench-negatives-") as work:
        inputs = [("input", os.path.abspath(args.input))]
        if args.real_media:
            real = bench_filters.make_real_media(args.real_media, os.path.join(work, "real"))
            inputs += [("real media", real)] if real else []
        results["inputs"] = [bench_input(name, folder, config, work, augment, args.repeats) for name, folder in inputs]
    results["wall_s"] = time.perf_counter() - t0
    results["load_average_1min"] = {"start": load_before, "end": os.getloadavg()[0]}
    print(
        f"one process, {os.cpu_count()} cores on the machine, fastest of {args.repeats} repeat(s);"
        f" 1-min load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
        " (well above 1, or cpu/wall well below 1: other processes shared the CPU)\n"
    )
    print("\n\n".join(format_report(r) for r in results["inputs"]))
    print(f"\nbench wall time: {results['wall_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
