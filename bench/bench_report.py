"""Benchmark ``javis report`` on a synthetic 10,000-clip run (issue 12: under a minute, HTML
under 20 MB).

python bench/bench_report.py [--num-clips 10000] [--clips-per-source 10] [--per-group 12] [--json FILE]

Builds ledger rows for ``--num-clips`` clips (and their sources, some rejected at ingest and
probe) in a temporary output folder, as a run of the ``demo`` preset would leave them: scores
drawn at random, each clip decided by the real stage rules in pipeline order (clip_length,
sound, then each filter's ``decide``), accepted clips with a media path, every clip with a
thumbnail file (the same small JPEG strip). The outputs go through ``write_outputs`` with a
``config.json`` and a ``manifest.json`` like a run's. Then it times ``build_report`` and reports
the HTML size, the assets' size and the number of thumbnails copied.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.config import load_config
from pipeline.dag import active_stages, funnel_stages
from pipeline.funnel import check_invariant, compute_funnel
from pipeline.outputs import CONFIG_JSON, MANIFEST, write_outputs
from pipeline.report import build_report
from schemas import Col, Kind, State, conform
from stages import aesthetic, motion, ocr, speech

FILTER_DECIDE = {"aesthetic": aesthetic.decide, "motion": motion.decide, "speech": speech.decide, "ocr": ocr.decide}
BACKENDS = {"aesthetic": Col.AESTHETIC_BACKEND, "motion": Col.MOTION_BACKEND, "speech": Col.SPEECH_BACKEND,
            "ocr": Col.OCR_BACKEND}  # fmt: skip


def _thumb_jpeg() -> bytes:
    """One 3-frame strip, 160 px high, as the analysis writes it."""
    strip = np.concatenate([np.full((160, 284, 3), 60 * (i + 1), np.uint8) for i in range(3)], axis=1)
    return cv2.imencode(".jpg", strip)[1].tobytes()


def _reject(row: dict[str, Any], stage: str, reason: str, metric: str | None, value: Any, threshold: Any) -> None:
    row.update({Col.STATE: State.REJECTED, Col.STAGE: stage, Col.REASON: reason, Col.METRIC: metric,
                Col.VALUE: value, Col.THRESHOLD: threshold})  # fmt: skip


def _clip(rng: random.Random, source_id: str, n: int, start_s: float, config: Any) -> dict[str, Any]:
    duration = rng.uniform(0.5, 60.0)
    clip_id = f"c{source_id[1:9]}{n:04d}"
    row = {Col.ID: clip_id, Col.KIND: Kind.CLIP, Col.SOURCE_ID: source_id, Col.INPUT: f"/data/{source_id}.mp4",
           Col.CLIP_START_S: start_s, Col.CLIP_END_S: start_s + duration, Col.CLIP_DURATION_S: duration,
           Col.THUMB_PATH: f"media/thumbs/{source_id}/{clip_id}.jpg"}  # fmt: skip
    if duration < config.clip_length.min_clip_s:
        _reject(row, "clip_length", "too_short", Col.CLIP_DURATION_S, duration, config.clip_length.min_clip_s)
        return row
    row.update({Col.SOUND_MEAN_DBFS: rng.gauss(-30, 14), Col.SOUND_PEAK_DBFS: rng.uniform(-20, 0),
                Col.SOUND_AUDIO_GAP_S: 0.0})  # fmt: skip
    if row[Col.SOUND_MEAN_DBFS] < config.sound.min_mean_dbfs:
        _reject(row, "sound", "silent", Col.SOUND_MEAN_DBFS, row[Col.SOUND_MEAN_DBFS], config.sound.min_mean_dbfs)
        return row
    parts = [rng.uniform(0, 10) for _ in range(4)]
    scores = {
        Col.AESTHETIC_IQ_MEAN: min(10.0, sum(parts) / 4 + rng.gauss(0, 1) ** 2), Col.AESTHETIC_IQ_MIN: min(parts),
        Col.AESTHETIC_IQ_SHARPNESS: parts[0], Col.AESTHETIC_IQ_EXPOSURE: parts[1],
        Col.AESTHETIC_IQ_CONTRAST: parts[2], Col.AESTHETIC_IQ_COLOUR: parts[3],
        Col.MOTION_FLOW_MEAN: rng.lognormvariate(-3.5, 1.2), Col.MOTION_MOVING_FRACTION: rng.random(),
        Col.SPEECH_RATIO: rng.betavariate(0.6, 3.0), Col.SPEECH_LONGEST_S: rng.uniform(0, duration),
        Col.SPEECH_MUSIC_RATIO: rng.random(),
        Col.OCR_NUM_REGIONS: min(40, int(rng.expovariate(0.4))), Col.OCR_TEXT_AREA_FRACTION: rng.random() * 0.3,
    }  # fmt: skip
    for spec in active_stages(config):
        if spec.name not in FILTER_DECIDE:
            continue
        row[BACKENDS[spec.name]] = "synthetic"
        row.update({c: v for c, v in scores.items() if c.startswith(spec.name)})
        rejection = FILTER_DECIDE[spec.name](getattr(config, spec.name), row)
        if rejection is not None:
            _reject(row, spec.name, rejection.reason, rejection.metric, rejection.value, rejection.threshold)
            return row
    row.update({Col.STATE: State.ACCEPTED, Col.MEDIA_PATH: f"media/clips/{source_id}/{clip_id}.mp4"})
    return row


def synthetic_rows(num_clips: int, clips_per_source: int, config: Any, seed: int = 0) -> list[dict[str, Any]]:
    """Sources (1 in 50 rejected at ingest, 1 in 50 at probe) and their clips."""
    rng = random.Random(seed)
    rows, n = [], 0
    index = 0
    while n < num_clips:
        source_id = f"s{index:08x}{rng.getrandbits(32):08x}"
        src = {Col.ID: source_id, Col.KIND: Kind.SOURCE, Col.SOURCE_ID: source_id, Col.INPUT: f"/data/{source_id}.mp4"}
        index += 1
        if index % 50 == 0:
            _reject(src, "ingest", "empty_file", None, None, None)
        elif index % 50 == 25:
            _reject(src, "probe", "no_audio", None, None, None)
        else:
            num = min(clips_per_source, num_clips - n)
            clips = [_clip(rng, source_id, k, k * 30.0, config) for k in range(num)]
            src.update({Col.STATE: State.ACCEPTED, Col.SCENE_NUM_CLIPS: num})
            rows += clips
            n += num
        rows.append(src)
    return rows


def make_run(out: Path, num_clips: int, clips_per_source: int) -> None:
    """A finished run's output folder with synthetic rows (see the module docstring)."""
    config = load_config("demo")
    table = conform(synthetic_rows(num_clips, clips_per_source, config))
    num_sources = sum(1 for k in table.column(Col.KIND).to_pylist() if k == Kind.SOURCE)
    funnel = compute_funnel(table, funnel_stages(config), num_sources)
    check_invariant(table, funnel)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_JSON).write_text(json.dumps(config.to_dict()))
    files = write_outputs(str(out), table, config.output)
    jpeg = _thumb_jpeg()
    for rel in table.column(Col.THUMB_PATH).to_pylist():
        if rel:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(jpeg)
    specs = active_stages(config)
    manifest = {"javis_version": "bench", "schema_version": "bench", "run": {"inputs": ["synthetic"]},
                "config": config.to_dict(), "stages": [s.name for s in specs], "disabled_stages": [],
                "config_hashes": {s.name: config.stage_hash(s.name) for s in specs}, "versions": {},
                "funnel": [f.to_json() for f in funnel], "files": files}  # fmt: skip
    (out / MANIFEST).write_text(json.dumps(manifest))


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-clips", type=int, default=10_000)
    parser.add_argument("--clips-per-source", type=int, default=10)
    parser.add_argument("--per-group", type=int, default=12)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        t0 = time.monotonic()
        make_run(out, args.num_clips, args.clips_per_source)
        made_s = time.monotonic() - t0
        t0 = time.monotonic()
        page = build_report(out, per_group=args.per_group)
        build_s = time.monotonic() - t0
        assets = page.parent / "assets"
        result = {
            "num_clips": args.num_clips,
            "synthetic_run_s": round(made_s, 2),
            "report_build_s": round(build_s, 2),
            "html_mb": round(page.stat().st_size / 2**20, 2),
            "assets_mb": round(_size(assets) / 2**20, 2),
            "plotly_js_mb": round((assets / "plotly.min.js").stat().st_size / 2**20, 2),
            "num_thumbnails": len(list((assets / "thumbs").iterdir())),
        }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
