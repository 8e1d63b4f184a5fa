"""Precompute VAE latents and text states into Parquet, on Ray Data, so training never re-encodes.

Input: the output folder of a curation run (accepted clips in ``shards/``) and, when present, its
hard negatives (``negatives/``, from ``javis augment``). Output (default ``<data>/latents/`` for the
JavisDiT specs, ``<data>/latents-ditpp-tiny/`` and ``<data>/latents-ditpp-paper/`` for JavisDiT++'s:
:func:`latents_dir_name`):

``shards/shard-<hash>.parquet``  one file per encoded batch, rows in ``schemas.latents.LATENTS_SCHEMA``
``failures.parquet``      every input of the last run without a latent row, and why
``manifest.json``         spec, encoders, buckets and the counts of the last run (written last)

Each clip is decoded once with PyAV (``stages.decode.decode_clip``): frames at ``spec.video_fps``
from the clip's start, scaled to cover its bucket's resolution and centre-cropped; audio as
16 kHz mono. The bucket (height, width, frames) is chosen from the shard row (nearest aspect
ratio; the most frames the clip fills) and a negative always takes its clip's bucket, so a
positive and its negatives have the same shapes.

Captions: ``caption_column`` names the shard column holding captions; by default the merged
annotation caption (``caption_merge_text``). Where it is absent or null, the fallback is the
source title (``src_title``), else the empty prompt; ``caption_source`` records which. Negatives store no text: the pairing uses the positive's.

Every input ends accounted: encoded now, already encoded (resume skips ids present in a shard),
or failed (decode error, clip shorter than the shortest bucket, negative of an unknown clip) in
``failures.parquet``. Failed inputs are retried on the next run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import os
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model.encoders import Encoders, build_encoders, log_mel
from model.spec import DITPP_PAPER, DITPP_TINY, SPECS, TINY, LatentSpec
from pipeline.outputs import read_shards, require_run
from schemas import Col, NegCol
from schemas.latents import LATENT_FAILURE_SCHEMA, LATENTS_SCHEMA, LatCol, LatentKind, pack_tensor
from stages.storage import Storage, is_uri

log = logging.getLogger(__name__)

LATENTS_DIR, SHARDS_DIR, FAILURES, MANIFEST = "latents", "shards", "failures.parquet", "manifest.json"
NEGATIVES_DIR = "negatives"
_MAX_ERROR_CHARS = 2000
_ITEM_KEYS = (LatCol.FAMILY, LatCol.OPERATION, LatCol.SWAPPED, LatCol.CAPTION, LatCol.CAPTION_SOURCE, "media_bytes")
_SWAPPED = {"video_spatial": "video", "video_temporal": "video", "audio_spatial": "audio", "audio_temporal": "audio"}


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Resolution and duration buckets: every latent row has one (height, width, frames)."""

    resolutions: tuple[tuple[int, int], ...]  # (height, width) pairs
    num_frames: tuple[int, ...]  # frame counts at spec.video_fps

    def __post_init__(self) -> None:
        if not self.resolutions or not self.num_frames:
            raise ValueError("buckets need at least one resolution and one frame count")
        if any(h <= 0 or w <= 0 for h, w in self.resolutions) or any(t <= 0 for t in self.num_frames):
            raise ValueError(f"bucket sizes must be positive: {self}")
        object.__setattr__(self, "num_frames", tuple(sorted(self.num_frames)))

    def check(self, spec: LatentSpec) -> None:
        ss = spec.video_space_stride
        bad = [(h, w) for h, w in self.resolutions if h % ss or w % ss]
        if bad:
            raise ValueError(f"bucket resolutions {bad} are not multiples of the video space stride {ss}")
        ts = spec.video_time_stride
        if spec.video_vae == "wan" and any((t - 1) % ts for t in self.num_frames):
            raise ValueError(f"frame counts {self.num_frames} must be {ts}k + 1 for the causal Wan VAE")

    def pick(self, width: int, height: int, duration_s: float, fps: float) -> tuple[int, int, int] | None:
        """(height, width, frames): the nearest aspect ratio, the longest duration the clip
        fills; None when the clip is shorter than the shortest bucket."""
        available = math.floor(duration_s * fps + 1e-3)
        fitting = [t for t in self.num_frames if t <= available]
        if not fitting:
            return None
        aspect = math.log(width / height)
        h, w = min(self.resolutions, key=lambda hw: (abs(math.log(hw[1] / hw[0]) - aspect), hw))
        return h, w, fitting[-1]

    def to_json(self) -> dict[str, Any]:
        return {"resolutions": [list(r) for r in self.resolutions], "num_frames": list(self.num_frames)}


# tiny: 4:3, 3:4 and square at 48-64 px; 2, 3 and 4 s at 8 fps (the demo clips are 3-4 s)
TINY_BUCKETS = Buckets(resolutions=((48, 64), (64, 48), (64, 64)), num_frames=(16, 24, 32))
# paper: 240p at 16:9, 9:16, 4:3, 3:4, 1:1 (sides rounded to multiples of 16); 2 s and 4 s at 24 fps
PAPER_BUCKETS = Buckets(
    resolutions=((240, 432), (432, 240), (240, 320), (320, 240), (240, 240)), num_frames=(48, 96)
)


# JavisDiT++ (Wan2.1's causal VAE: 4k + 1 frames fill whole latent frames). tiny: 17 and 25 frames at
# 8 fps (2.1 s, 3.1 s); paper: Wan2.1-1.3B's 480p (832x480 and the same aspects as above, sides
# multiples of 16 for the 8x VAE and 2x2 patches) at 33 and 81 frames at 16 fps (2.1 s, 5.1 s, Wan's
# 81). One resolution tier only: ``Buckets.pick`` takes the smaller of two equal aspects, so 240p
# and 480p in one set would never use 480p; pass ``buckets=`` to precompute at 240p.
DITPP_TINY_BUCKETS = Buckets(resolutions=((48, 64), (64, 48), (64, 64)), num_frames=(17, 25))
DITPP_PAPER_BUCKETS = Buckets(
    resolutions=((480, 832), (832, 480), (480, 640), (640, 480), (480, 480)), num_frames=(33, 81)
)
_NEW_SPEC_FIELDS = ("video_vae", "text_encoder")  # added for JavisDiT++: absent from older manifests


def latents_dir_name(spec_name: str) -> str:
    """The folder ``javis latents`` writes under a curated folder for the spec named ``spec_name``:
    ``latents`` for the JavisDiT specs (as before), ``latents-<name>`` for the others."""
    if spec_name not in SPECS:
        raise ValueError(f"unknown preset {spec_name!r}; choose one of {sorted(SPECS)}")
    return LATENTS_DIR if spec_name in ("tiny", "paper") else f"{LATENTS_DIR}-{spec_name}"


def default_buckets(spec: LatentSpec) -> Buckets:
    if spec == TINY:
        return TINY_BUCKETS
    return {DITPP_TINY: DITPP_TINY_BUCKETS, DITPP_PAPER: DITPP_PAPER_BUCKETS}.get(spec, PAPER_BUCKETS)


def name_of_spec(spec: LatentSpec) -> str | None:
    """The ``model.spec.SPECS`` name of ``spec`` (None: a spec no preset has)."""
    return next((name for name, known in SPECS.items() if known == spec), None)


def with_spec_defaults(spec_json: dict[str, Any] | None) -> dict[str, Any] | None:
    """A manifest's ``spec`` with the fields added since it was written set to their defaults, so
    latents made before JavisDiT++ still match their (unchanged) spec."""
    if spec_json is None:
        return None
    defaults = {f.name: f.default for f in dataclasses.fields(LatentSpec) if f.name in _NEW_SPEC_FIELDS}
    return {**defaults, **spec_json}


def made_with_spec(latents_dir: str | os.PathLike) -> str | None:
    """The name of the spec (``model.spec.SPECS``) a latents folder's manifest records, or None
    (no manifest, or a spec no preset has). Manifests older than a spec field count as its default."""
    manifest = Path(latents_dir) / MANIFEST
    spec = with_spec_defaults(json.loads(manifest.read_text()).get("spec")) if manifest.is_file() else None
    return next((name for name, s in SPECS.items() if json.loads(json.dumps(dataclasses.asdict(s))) == spec), None)


def bucket_key(height: int, width: int, frames: int) -> str:
    return f"{height}x{width}x{frames}"


# ---- decoding --------------------------------------------------------------------------------


def cover_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale (T, h, w, 3) frames to cover ``height x width`` (aspect kept), centre-crop."""
    import cv2

    _, h, w, _ = frames.shape
    scale = max(height / h, width / w)
    sh, sw = max(height, round(h * scale)), max(width, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    top, left = (sh - height) // 2, (sw - width) // 2
    return np.stack([cv2.resize(f, (sw, sh), interpolation=interp)[top : top + height, left : left + width] for f in frames])


def load_media(media: str | bytes, height: int, width: int, num_frames: int, spec: LatentSpec) -> tuple[np.ndarray, np.ndarray]:
    """Decode a clip once: ``num_frames`` frames uint8 (T, height, width, 3) at ``spec.video_fps``
    from its start, and the matching 16 kHz mono audio float32 (S,), zero-padded if short."""
    from stages.decode import AUDIO_RATE_HZ, FrameNeed, decode_clip

    if spec.audio_rate_hz != AUDIO_RATE_HZ:
        raise ValueError(f"the decoder gives {AUDIO_RATE_HZ} Hz audio, the spec wants {spec.audio_rate_hz}")
    duration_s = num_frames / spec.video_fps
    # decode large enough to cover the bucket after the aspect-preserving downscale
    need = FrameNeed("latents", fps=spec.video_fps, max_side=max(16, 2 * max(height, width)))
    decoded = decode_clip(media, [need], audio=True, duration_s=duration_s)
    frames = decoded.frames["latents"][:num_frames]
    if frames.ndim != 4 or len(frames) != num_frames:
        raise ValueError(f"decoded {len(frames)} frames, the bucket needs {num_frames}")
    if decoded.audio is None or decoded.audio.size == 0:
        raise ValueError("the clip has no audio")
    num_samples = round(duration_s * spec.audio_rate_hz)
    audio = np.zeros(num_samples, np.float32)
    audio[: min(num_samples, decoded.audio.size)] = decoded.audio[:num_samples]
    return cover_crop(frames, height, width), audio


# ---- the encoding step (no Ray here: the runner maps it over a Ray Dataset) ------------------


def _error(e: BaseException) -> dict[str, str]:
    return {LatCol.ERROR_TYPE: type(e).__name__, LatCol.ERROR_MESSAGE: (str(e) or repr(e))[:_MAX_ERROR_CHARS]}


class LatentEncoder:
    """Loads the encoders once; maps a batch of work items (pyarrow) to a status table (one row
    per item: id and error, null when encoded) and writes the encoded rows as one shard file."""

    def __init__(self, data_dir: str, output_dir: str, kind: str, spec: LatentSpec,
                 paths: Mapping[str, str] | None, storage_dtype: str, device: str) -> None:  # fmt: skip
        self.data_dir, self.output_dir = Path(data_dir), Path(output_dir)
        self.spec, self.storage_dtype = spec, np.dtype(storage_dtype)
        self.encoders: Encoders = build_encoders(kind, spec, paths).to(device)
        self.tag = json.dumps({"kind": kind, **self.encoders.describe()}, sort_keys=True)

    def __call__(self, batch: pa.Table) -> pa.Table:
        items, status, groups = batch.to_pylist(), {}, {}
        for item in items:
            try:
                media = item["media_bytes"] or str(self.data_dir / item[LatCol.MEDIA_PATH])
                h, w, t = item[LatCol.BUCKET_HEIGHT], item[LatCol.BUCKET_WIDTH], item[LatCol.BUCKET_FRAMES]
                groups.setdefault(item[LatCol.BUCKET], []).append((item, *load_media(media, h, w, t, self.spec)))
            except Exception as e:  # the row boundary: recorded, the run goes on
                log.warning("latents: %s failed to decode: %s", item[LatCol.ID], e)
                status[item[LatCol.ID]] = _error(e)
        rows = []
        for group in groups.values():
            try:
                rows += self._encode(group)
            except Exception as e:  # a batched model call failed: every item of the group is failed
                traceback.print_exc()
                status.update({item[LatCol.ID]: _error(e) for item, _, _ in group})
        if rows:
            self._write(rows)
        return pa.Table.from_pylist(
            [{LatCol.ID: i[LatCol.ID], **status.get(i[LatCol.ID], {LatCol.ERROR_TYPE: None, LatCol.ERROR_MESSAGE: None})}
             for i in items],
            schema=pa.schema([(LatCol.ID, pa.string()), (LatCol.ERROR_TYPE, pa.string()), (LatCol.ERROR_MESSAGE, pa.string())]),
        )  # fmt: skip

    def _encode(self, group: list[tuple[dict, np.ndarray, np.ndarray]]) -> list[dict[str, Any]]:
        import torch

        items = [g[0] for g in group]
        video = self.encoders.video.encode(torch.from_numpy(np.stack([g[1] for g in group]))).cpu()
        mel = log_mel(torch.from_numpy(np.stack([g[2] for g in group])), self.spec)
        audio = self.encoders.audio.encode(mel).cpu()
        texts = {i: item[LatCol.CAPTION] or "" for i, item in enumerate(items) if item[LatCol.KIND] == LatentKind.POSITIVE}
        states = {}
        if texts:
            order = sorted(texts)
            for key, encoder in (("text", self.encoders.text), ("prior", self.encoders.prior_text)):
                if encoder is None:  # a spec without prior text (JavisDiT++)
                    continue
                s, m = encoder.encode([texts[i] for i in order])
                states[key] = {i: (s[n][m[n]].cpu(), s.shape[1]) for n, i in enumerate(order)}
        rows = []
        for i, item in enumerate(items):
            row = {k: item[k] for k in LATENTS_SCHEMA.names if k in item}
            row[LatCol.ENCODERS] = self.tag
            row.update(pack_tensor(LatCol.VIDEO, video[i].numpy().astype(self.storage_dtype)))
            row.update(pack_tensor(LatCol.AUDIO, audio[i].numpy().astype(self.storage_dtype)))
            if i in texts:
                text, text_len = states["text"][i]
                row.update(pack_tensor(LatCol.TEXT, text.numpy().astype(self.storage_dtype)))
                row[LatCol.TEXT_LEN] = text_len
                if "prior" in states:
                    prior, prior_len = states["prior"][i]
                    row.update(pack_tensor(LatCol.PRIOR_TEXT, prior.numpy().astype(self.storage_dtype)))
                    row[LatCol.PRIOR_TEXT_LEN] = prior_len
            rows.append(row)
        return rows

    def _write(self, rows: list[dict[str, Any]]) -> None:
        table = pa.Table.from_pylist(sorted(rows, key=lambda r: r[LatCol.ID]), schema=LATENTS_SCHEMA)
        digest = hashlib.blake2b("\n".join(table.column(LatCol.ID).to_pylist()).encode(), digest_size=8).hexdigest()
        final = self.output_dir / SHARDS_DIR / f"shard-{digest}.parquet"
        tmp = self.output_dir / f".{final.name}.tmp"  # outside shards/, which readers list
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, final)  # a killed run leaves no half-written shard


# ---- work items ------------------------------------------------------------------------------


def _caption(row: dict[str, Any], caption_column: str | None) -> tuple[str, str]:
    column = caption_column or Col.CAPTION_MERGE_TEXT
    if row.get(column):
        return row[column], column
    if row.get(Col.SRC_TITLE):
        return row[Col.SRC_TITLE], Col.SRC_TITLE
    return "", "empty"


def _failure(item: dict[str, Any], error_type: str, message: str) -> dict[str, Any]:
    keys = (LatCol.ID, LatCol.CLIP_ID, LatCol.KIND, LatCol.FAMILY, LatCol.OPERATION, LatCol.MEDIA_PATH)
    return {**{k: item.get(k) for k in keys}, LatCol.ERROR_TYPE: error_type, LatCol.ERROR_MESSAGE: message}


def read_negatives(data_dir: str | os.PathLike) -> pa.Table | None:
    """The hard negatives of ``javis augment`` (None when it has not run)."""
    paths = sorted((Path(data_dir) / NEGATIVES_DIR).glob("shard-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in paths]) if paths else None


def work_items(data_dir: str | os.PathLike, spec: LatentSpec, buckets: Buckets, caption_column: str | None,
               include_negatives: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """(items to encode, items failed before decoding): positives from ``shards/``, then their
    negatives, each with its bucket; a negative takes its clip's bucket."""
    clips = read_shards(data_dir)
    if caption_column and caption_column not in clips.column_names:
        raise ValueError(f"caption column {caption_column!r} is not in {data_dir}/shards (annotation not run?)")
    items, failed, bucket_of = [], [], {}
    for row in clips.to_pylist():
        caption, caption_source = _caption(row, caption_column)
        item = {LatCol.ID: row[Col.ID], LatCol.CLIP_ID: row[Col.ID], LatCol.SOURCE_ID: row[Col.SOURCE_ID],
                LatCol.KIND: LatentKind.POSITIVE, LatCol.MEDIA_PATH: row[Col.MEDIA_PATH], "media_bytes": row[Col.MEDIA_BYTES],
                LatCol.CAPTION: caption, LatCol.CAPTION_SOURCE: caption_source}  # fmt: skip
        bucket = buckets.pick(row[Col.CUT_WIDTH], row[Col.CUT_HEIGHT], row[Col.CUT_VIDEO_DURATION_S], spec.video_fps)
        if bucket is None:
            failed.append(_failure(item, "too_short", f"{row[Col.CUT_VIDEO_DURATION_S]} s < the shortest bucket"))
            continue
        bucket_of[row[Col.ID]] = bucket
        items.append(item)
    negatives = read_negatives(data_dir) if include_negatives else None
    for row in negatives.to_pylist() if negatives is not None else []:
        item = {LatCol.ID: row[NegCol.NEGATIVE_ID], LatCol.CLIP_ID: row[NegCol.CLIP_ID],
                LatCol.SOURCE_ID: row[NegCol.SOURCE_ID], LatCol.KIND: LatentKind.NEGATIVE,
                LatCol.FAMILY: row[NegCol.FAMILY], LatCol.OPERATION: row[NegCol.OPERATION],
                LatCol.SWAPPED: _SWAPPED.get(row[NegCol.FAMILY]), LatCol.MEDIA_PATH: row[NegCol.MEDIA_PATH],
                "media_bytes": row[NegCol.MEDIA_BYTES]}  # fmt: skip
        if item[LatCol.SWAPPED] is None:
            failed.append(_failure(item, "unknown_family", f"no modality is known for family {row[NegCol.FAMILY]!r}"))
        elif row[NegCol.CLIP_ID] not in bucket_of:
            failed.append(_failure(item, "no_positive", "its clip has no bucket (not accepted, or too short)"))
        else:
            bucket_of[item[LatCol.ID]] = bucket_of[row[NegCol.CLIP_ID]]
            items.append(item)
    for item in items:
        for key in _ITEM_KEYS:
            item.setdefault(key, None)  # one schema for every item (Ray infers it from the rows)
        h, w, t = bucket_of[item[LatCol.ID]]
        item.update({LatCol.BUCKET: bucket_key(h, w, t), LatCol.BUCKET_HEIGHT: h, LatCol.BUCKET_WIDTH: w,
                     LatCol.BUCKET_FRAMES: t, LatCol.FPS: spec.video_fps, LatCol.DURATION_S: t / spec.video_fps,
                     LatCol.NUM_SAMPLES: round(t / spec.video_fps * spec.audio_rate_hz)})  # fmt: skip
    return items, failed


def latent_shards(latents_dir: str | os.PathLike) -> list[Path]:
    return sorted((Path(latents_dir) / SHARDS_DIR).glob("shard-*.parquet"))


def done_ids(latents_dir: str | os.PathLike) -> set[str]:
    paths = latent_shards(latents_dir)
    return set(pq.read_table(paths, columns=[LatCol.ID]).column(LatCol.ID).to_pylist()) if paths else set()


# ---- the Ray Data stage ----------------------------------------------------------------------


def _check_manifest(output_dir: Path, identity: dict[str, Any]) -> None:
    path = output_dir / MANIFEST
    if path.exists():
        old = {k: json.loads(path.read_text()).get(k) for k in identity}
        old["spec"] = with_spec_defaults(old["spec"])
        if old != identity:
            raise ValueError(f"{output_dir} holds latents made with other settings {old}; use another output folder")


def precompute_latents(
    data_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    encoders: str = "tiny",
    spec: LatentSpec = TINY,
    buckets: Buckets | None = None,
    caption_column: str | None = None,
    include_negatives: bool = True,
    ray_address: str | None = None,
    num_gpus: float = 0,
    encoder_paths: Mapping[str, str] | None = None,
    batch_size: int = 8,
    num_workers: int = 1,
    storage_dtype: str = "float32",
) -> dict[str, Any]:
    """Encode every accepted clip (and negative) of ``data_dir`` not encoded yet; returns the
    summary written to the manifest. ``output_dir`` defaults to ``data_dir / latents_dir_name(spec)``
    (``latents`` for any spec not in ``model.spec.SPECS``); ``buckets`` to :func:`default_buckets`
    (TINY_BUCKETS for TINY, the DITPP ones for the DITPP specs, else PAPER_BUCKETS). ``num_gpus``
    per encoder actor, ``num_workers`` actors."""
    import ray

    if is_uri(str(data_dir)) or (output_dir is not None and is_uri(str(output_dir))):
        raise ValueError(
            f"javis latents reads and writes local folders; {data_dir} is on object storage: copy the run down "
            "first (e.g. `aws s3 sync s3://bucket/run run`), then `javis latents run`"
        )
    data_dir = Path(data_dir).resolve()
    require_run(str(data_dir))
    name = name_of_spec(spec)
    output_dir = Path(output_dir).resolve() if output_dir else data_dir / (latents_dir_name(name) if name else LATENTS_DIR)
    buckets = buckets or default_buckets(spec)
    buckets.check(spec)
    identity = {"encoders": encoders, "spec": dataclasses.asdict(spec), "buckets": buckets.to_json(),
                "storage_dtype": storage_dtype}  # fmt: skip
    (output_dir / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    _check_manifest(output_dir, identity)
    items, failed = work_items(data_dir, spec, buckets, caption_column, include_negatives)
    done = done_ids(output_dir)
    todo = sorted((i for i in items if i[LatCol.ID] not in done), key=lambda i: (i[LatCol.BUCKET], i[LatCol.ID]))
    statuses: list[dict[str, Any]] = []
    if todo:
        started = False
        if not ray.is_initialized():
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(address=ray_address or "local", include_dashboard=False)
            started = True
        try:
            ds = ray.data.from_items(todo).map_batches(
                LatentEncoder,
                fn_constructor_args=(str(data_dir), str(output_dir), encoders, spec, encoder_paths, storage_dtype,
                                     "cuda" if num_gpus else "cpu"),
                batch_size=batch_size, batch_format="pyarrow", num_gpus=num_gpus,
                compute=ray.data.ActorPoolStrategy(size=num_workers),
            )  # fmt: skip
            statuses = [r for b in ds.iter_batches(batch_format="pyarrow", batch_size=None) for r in b.to_pylist()]
        finally:
            if started:
                ray.shutdown()
    return _finish(output_dir, identity, items, failed, done, statuses)


def _finish(output_dir: Path, identity: dict[str, Any], items: list[dict], pre_failed: list[dict], done: set[str],
            statuses: list[dict]) -> dict[str, Any]:  # fmt: skip
    by_id = {i[LatCol.ID]: i for i in items}
    run_failed = [_failure(by_id[s[LatCol.ID]], s[LatCol.ERROR_TYPE], s[LatCol.ERROR_MESSAGE])
                  for s in statuses if s[LatCol.ERROR_TYPE]]  # fmt: skip
    failed = sorted(pre_failed + run_failed, key=lambda f: f[LatCol.ID])
    now = dt.datetime.now(dt.timezone.utc)
    table = pa.Table.from_pylist([{**f, LatCol.UPDATED_AT: now} for f in failed], schema=LATENT_FAILURE_SCHEMA)
    tmp = output_dir / f".{FAILURES}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, output_dir / FAILURES)
    every = items + pre_failed
    skipped = sum(1 for i in items if i[LatCol.ID] in done)
    encoded = sum(1 for s in statuses if not s[LatCol.ERROR_TYPE])
    summary = {
        **identity,
        "output_dir": str(output_dir),
        "inputs": len(every),
        "positives": sum(1 for i in every if i[LatCol.KIND] == LatentKind.POSITIVE),
        "negatives": sum(1 for i in every if i[LatCol.KIND] == LatentKind.NEGATIVE),
        "skipped_done": skipped,
        "encoded": encoded,
        "failed": len(failed),
        "failed_ids": [f[LatCol.ID] for f in failed],
        "rows_on_disk": len(done_ids(output_dir)),
    }
    if summary["inputs"] != skipped + encoded + len(failed):  # every input ends in exactly one state
        raise AssertionError(f"latents accounting broken: {summary}")
    Storage(output_dir).write_json(MANIFEST, summary)
    return summary
