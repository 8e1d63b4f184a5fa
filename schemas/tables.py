"""Every Arrow schema javis writes, with a version in the schema metadata.

One *work row* travels through the curation pipeline. It is either a source (one input video)
or a clip (a piece of a source). Stages only fill their own columns, prefixed with the stage
name; a clip row inherits its source's ``src_*`` and ``probe_*`` columns so shards are
self-describing. The output tables (sources, shards, rejections, ledger) are projections of
the work rows.

Fields whose metadata holds ``metric=1`` are raw scores: ``javis audit`` reports them and
``refilter``-style tools may re-threshold them without recomputation. Fields whose metadata
holds ``component_of=<metric column>`` explain a score: the parts it was computed from (e.g.
the image-quality sub-scores behind ``aesthetic_iq_mean``); ``component_columns`` lists them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = "1.4.0"
_VERSION_KEY = b"javis.schema_version"


class Kind:
    SOURCE = "source"
    CLIP = "clip"


class State:
    """Row states. Only ``PENDING`` is not terminal; ``FAILED`` is retried on the next run."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"
    TERMINAL = (ACCEPTED, REJECTED, FAILED)


class Col:
    """Column names. Grouped by the stage that writes them."""

    # identity and ledger state (pipeline)
    ID = "id"
    KIND = "kind"
    SOURCE_ID = "source_id"
    INPUT = "input"
    STATE = "state"
    STAGE = "stage"  # stage where the row reached its terminal state
    REASON = "reason"
    METRIC = "metric"
    VALUE = "value"
    THRESHOLD = "threshold"
    DETAIL = "detail"  # human-readable explanation of a rejection
    BACKEND = "backend"  # the model or algorithm behind a decision, with its version / weights hash
    CONFIG_HASH = "config_hash"
    ERROR_TYPE = "error_type"
    ERROR_MESSAGE = "error_message"
    ATTEMPT = "attempt"
    UPDATED_AT = "updated_at"
    RUN_ID = "run_id"  # the `javis run` invocation that decided the row (manifest: run_id / run_ids)
    THUMB_PATH = "thumb_path"  # clip: a JPEG strip of 3 frames (10/50/90 %), relative to the output folder
    # ingest
    SRC_URL = "src_url"
    SRC_PATH = "src_path"
    SRC_QUERY = "src_query"
    SRC_TITLE = "src_title"
    SRC_UPLOADER = "src_uploader"
    SRC_UPLOAD_DATE = "src_upload_date"
    SRC_LICENSE = "src_license"
    SRC_DURATION_S = "src_duration_s"
    SRC_EXTRACTOR = "src_extractor"
    SRC_SIZE_BYTES = "src_size_bytes"
    SRC_DUPLICATE_OF = "src_duplicate_of"
    # probe
    PROBE_CONTAINER = "probe_container"
    PROBE_DURATION_S = "probe_duration_s"
    PROBE_VIDEO_CODEC = "probe_video_codec"
    PROBE_WIDTH = "probe_width"
    PROBE_HEIGHT = "probe_height"
    PROBE_ROTATION_DEG = "probe_rotation_deg"
    PROBE_SAR = "probe_sar"
    PROBE_DAR = "probe_dar"
    PROBE_FPS = "probe_fps"
    PROBE_IS_VFR = "probe_is_vfr"
    PROBE_HAS_AUDIO = "probe_has_audio"
    PROBE_AUDIO_CODEC = "probe_audio_codec"
    PROBE_AUDIO_SAMPLE_RATE_HZ = "probe_audio_sample_rate_hz"
    PROBE_AUDIO_CHANNELS = "probe_audio_channels"
    # scene_cut (source rows) and clip bounds (clip rows)
    SCENE_DETECTOR = "scene_detector"
    SCENE_NUM_SCENES = "scene_num_scenes"
    SCENE_NUM_CLIPS = "scene_num_clips"
    CLIP_SCENE_INDEX = "clip_scene_index"
    CLIP_PIECE_INDEX = "clip_piece_index"
    CLIP_START_FRAME = "clip_start_frame"
    CLIP_END_FRAME = "clip_end_frame"
    CLIP_START_S = "clip_start_s"
    CLIP_END_S = "clip_end_s"
    CLIP_DURATION_S = "clip_duration_s"
    CLIP_VISUAL_START_S = "clip_visual_start_s"  # the scene detector's bounds, before the quiet-point move
    CLIP_VISUAL_END_S = "clip_visual_end_s"
    CLIP_START_DBFS = "clip_start_dbfs"  # 20 ms audio level at the chosen bounds
    CLIP_END_DBFS = "clip_end_dbfs"
    CLIP_BOUNDARY_FLAG = "clip_boundary_flag"  # start / end / both: a bound left inside a sound
    # cut
    MEDIA_PATH = "media_path"
    MEDIA_SIZE_BYTES = "media_size_bytes"
    MEDIA_SHA256 = "media_sha256"
    MEDIA_BYTES = "media_bytes"
    CUT_WIDTH = "cut_width"
    CUT_HEIGHT = "cut_height"
    CUT_FPS = "cut_fps"
    CUT_VIDEO_DURATION_S = "cut_video_duration_s"
    CUT_AUDIO_DURATION_S = "cut_audio_duration_s"
    CUT_AV_DIFF_S = "cut_av_diff_s"
    CUT_MAX_FRAME_S = "cut_max_frame_s"  # the longest video frame: av_mismatch's threshold is max_av_diff_frames of it
    CUT_IS_VFR = "cut_is_vfr"  # the encoded clip's video has a variable frame rate
    CUT_AUDIO_SAMPLE_RATE_HZ = "cut_audio_sample_rate_hz"  # the encoded clip's audio
    CUT_AUDIO_CHANNELS = "cut_audio_channels"
    CUT_FFMPEG_VERSION = "cut_ffmpeg_version"  # the FFmpeg that encoded the clip (its -version line)
    # sound
    SOUND_MEAN_DBFS = "sound_mean_dbfs"
    SOUND_PEAK_DBFS = "sound_peak_dbfs"
    SOUND_AUDIO_GAP_S = "sound_audio_gap_s"  # seconds of the clip no audio sample covers
    # scene_cut: each candidate clip's analysis pack, read by the filters and captioners
    # (transient: dropped after its last reader, never written out)
    DECODED = "decoded"
    # aesthetic: the LAION score (production) or a signal-based image-quality score (CPU)
    AESTHETIC_BACKEND = "aesthetic_backend"
    AESTHETIC_LAION_MEAN = "aesthetic_laion_mean"  # LAION aesthetic predictor, 0-10
    AESTHETIC_LAION_MIN = "aesthetic_laion_min"
    AESTHETIC_IQ_MEAN = "aesthetic_iq_mean"  # image-quality score, 0-10 (not an aesthetic model)
    AESTHETIC_IQ_MIN = "aesthetic_iq_min"
    # the image-quality score's sub-scores (0-1, mean over the sampled frames; see stages/aesthetic.py)
    AESTHETIC_IQ_SHARPNESS = "aesthetic_iq_sharpness"
    AESTHETIC_IQ_EXPOSURE = "aesthetic_iq_exposure"
    AESTHETIC_IQ_CONTRAST = "aesthetic_iq_contrast"
    AESTHETIC_IQ_COLOUR = "aesthetic_iq_colour"
    # motion
    MOTION_BACKEND = "motion_backend"
    MOTION_FLOW_MEAN = "motion_flow_mean"  # mean flow magnitude, normalised (see stages/motion.py)
    MOTION_MOVING_FRACTION = "motion_moving_fraction"
    # av_sync: audio-visual synchrony (JavisScore or AV-Align, see stages/av_sync.py)
    AV_SYNC_BACKEND = "av_sync_backend"
    AV_SYNC_SCORE = "av_sync_score"
    AV_SYNC_NUM_WINDOWS = "av_sync_num_windows"  # javisscore: 2 s windows averaged
    AV_SYNC_NUM_AUDIO_PEAKS = "av_sync_num_audio_peaks"  # av_align: audio onsets
    AV_SYNC_NUM_VIDEO_PEAKS = "av_sync_num_video_peaks"  # av_align: optical-flow peaks
    # ocr
    OCR_BACKEND = "ocr_backend"
    OCR_NUM_REGIONS = "ocr_num_regions"  # most text regions in one sampled frame
    OCR_TEXT_AREA_FRACTION = "ocr_text_area_fraction"  # largest text-covered fraction of a frame
    # speech
    SPEECH_BACKEND = "speech_backend"
    SPEECH_RATIO = "speech_ratio"  # speech seconds / clip seconds
    SPEECH_LONGEST_S = "speech_longest_s"
    SPEECH_MUSIC_RATIO = "speech_music_ratio"  # music seconds / clip seconds, where the backend tags music
    # caption_video: a detailed caption of the frames (Qwen2-VL), source title / keyword as context
    CAPTION_VIDEO_TEXT = "caption_video_text"
    CAPTION_VIDEO_PROMPT = "caption_video_prompt"  # prompt id and version, e.g. "caption_video@1"
    CAPTION_VIDEO_BACKEND = "caption_video_backend"  # LLM backend and model, e.g. "vllm:qwen2-vl-72b-instruct"
    # caption_audio: a detailed caption of the audio alone (Qwen2-Audio; never sees the video caption)
    CAPTION_AUDIO_TEXT = "caption_audio_text"
    CAPTION_AUDIO_PROMPT = "caption_audio_prompt"
    CAPTION_AUDIO_BACKEND = "caption_audio_backend"
    # caption_merge: one text prompt from both captions (Qwen2.5), with the logical-conflict check
    CAPTION_MERGE_TEXT = "caption_merge_text"  # the clip's text prompt for training
    CAPTION_MERGE_CONFLICT = "caption_merge_conflict"  # the captions contradict each other
    CAPTION_MERGE_CONFLICT_DETAIL = "caption_merge_conflict_detail"  # the model's explanation ("" when none)
    CAPTION_MERGE_UNKNOWN_SOURCE = "caption_merge_unknown_source"  # a heard sound has no identified source
    CAPTION_MERGE_UNKNOWN_SOURCES = "caption_merge_unknown_sources"  # those sounds, as the model names them
    CAPTION_MERGE_PROMPT = "caption_merge_prompt"
    CAPTION_MERGE_BACKEND = "caption_merge_backend"
    # taxonomy: category ids (schemas/taxonomy.py) per aspect; single-choice aspects are strings
    TAXONOMY_EVENT_SCENARIO = "taxonomy_event_scenario"
    TAXONOMY_VISUAL_STYLE = "taxonomy_visual_style"
    TAXONOMY_SOUND_TYPE = "taxonomy_sound_type"  # list: multi-label
    TAXONOMY_SPATIAL_COMPOSITION = "taxonomy_spatial_composition"  # list: multi-label
    TAXONOMY_TEMPORAL_COMPOSITION = "taxonomy_temporal_composition"
    TAXONOMY_PROMPT = "taxonomy_prompt"
    TAXONOMY_BACKEND = "taxonomy_backend"
    # content: sound types other than music and speech (the post-filter keeps clips with at least one)
    CONTENT_NUM_OTHER_SOUND_TYPES = "content_num_other_sound_types"


# list item named as Parquet names it, so a list column reads back with exactly this schema
_STRING_LIST = pa.list_(pa.field("element", pa.string()))


def _field(name: str, dtype: pa.DataType, metric: bool = False, component_of: str | None = None) -> pa.Field:
    metadata = {b"metric": b"1"} if metric else {}
    if component_of:
        metadata[b"component_of"] = component_of.encode()
    return pa.field(name, dtype, nullable=True, metadata=metadata or None)


_LEDGER_FIELDS = [
    _field(Col.ID, pa.string()),
    _field(Col.KIND, pa.string()),
    _field(Col.SOURCE_ID, pa.string()),
    _field(Col.INPUT, pa.string()),
    _field(Col.STATE, pa.string()),
    _field(Col.STAGE, pa.string()),
    _field(Col.REASON, pa.string()),
    _field(Col.METRIC, pa.string()),
    _field(Col.VALUE, pa.float64()),
    _field(Col.THRESHOLD, pa.float64()),
    _field(Col.DETAIL, pa.string()),
    _field(Col.BACKEND, pa.string()),
    _field(Col.CONFIG_HASH, pa.string()),
    _field(Col.ERROR_TYPE, pa.string()),
    _field(Col.ERROR_MESSAGE, pa.string()),
    _field(Col.ATTEMPT, pa.int32()),
    _field(Col.UPDATED_AT, pa.timestamp("us", tz="UTC")),
    _field(Col.RUN_ID, pa.string()),
]

_SOURCE_FIELDS = [
    _field(Col.SRC_URL, pa.string()),
    _field(Col.SRC_PATH, pa.string()),
    _field(Col.SRC_QUERY, pa.string()),
    _field(Col.SRC_TITLE, pa.string()),
    _field(Col.SRC_UPLOADER, pa.string()),
    _field(Col.SRC_UPLOAD_DATE, pa.string()),
    _field(Col.SRC_LICENSE, pa.string()),
    _field(Col.SRC_DURATION_S, pa.float64()),
    _field(Col.SRC_EXTRACTOR, pa.string()),
    _field(Col.SRC_SIZE_BYTES, pa.int64()),
    _field(Col.SRC_DUPLICATE_OF, pa.string()),
    _field(Col.PROBE_CONTAINER, pa.string()),
    _field(Col.PROBE_DURATION_S, pa.float64(), metric=True),
    _field(Col.PROBE_VIDEO_CODEC, pa.string()),
    _field(Col.PROBE_WIDTH, pa.int32()),
    _field(Col.PROBE_HEIGHT, pa.int32()),
    _field(Col.PROBE_ROTATION_DEG, pa.int32()),
    _field(Col.PROBE_SAR, pa.string()),
    _field(Col.PROBE_DAR, pa.string()),
    _field(Col.PROBE_FPS, pa.float64()),
    _field(Col.PROBE_IS_VFR, pa.bool_()),
    _field(Col.PROBE_HAS_AUDIO, pa.bool_()),
    _field(Col.PROBE_AUDIO_CODEC, pa.string()),
    _field(Col.PROBE_AUDIO_SAMPLE_RATE_HZ, pa.int32()),
    _field(Col.PROBE_AUDIO_CHANNELS, pa.int32()),
    _field(Col.SCENE_DETECTOR, pa.string()),
    _field(Col.SCENE_NUM_SCENES, pa.int32(), metric=True),
    _field(Col.SCENE_NUM_CLIPS, pa.int32(), metric=True),
]

_CLIP_FIELDS = [
    _field(Col.CLIP_SCENE_INDEX, pa.int32()),
    _field(Col.CLIP_PIECE_INDEX, pa.int32()),
    _field(Col.CLIP_START_FRAME, pa.int64()),
    _field(Col.CLIP_END_FRAME, pa.int64()),
    _field(Col.CLIP_START_S, pa.float64()),
    _field(Col.CLIP_END_S, pa.float64()),
    _field(Col.CLIP_DURATION_S, pa.float64(), metric=True),
    _field(Col.CLIP_VISUAL_START_S, pa.float64()),
    _field(Col.CLIP_VISUAL_END_S, pa.float64()),
    _field(Col.CLIP_START_DBFS, pa.float64()),
    _field(Col.CLIP_END_DBFS, pa.float64()),
    _field(Col.CLIP_BOUNDARY_FLAG, pa.string()),
    _field(Col.MEDIA_PATH, pa.string()),
    _field(Col.MEDIA_SIZE_BYTES, pa.int64()),
    _field(Col.MEDIA_SHA256, pa.string()),
    _field(Col.MEDIA_BYTES, pa.large_binary()),
    _field(Col.THUMB_PATH, pa.string()),
    _field(Col.CUT_WIDTH, pa.int32()),
    _field(Col.CUT_HEIGHT, pa.int32()),
    _field(Col.CUT_FPS, pa.float64()),
    _field(Col.CUT_VIDEO_DURATION_S, pa.float64(), metric=True),
    _field(Col.CUT_AUDIO_DURATION_S, pa.float64(), metric=True),
    _field(Col.CUT_AV_DIFF_S, pa.float64(), metric=True),
    _field(Col.CUT_MAX_FRAME_S, pa.float64(), component_of=Col.CUT_AV_DIFF_S),
    _field(Col.CUT_IS_VFR, pa.bool_()),
    _field(Col.CUT_AUDIO_SAMPLE_RATE_HZ, pa.int32()),
    _field(Col.CUT_AUDIO_CHANNELS, pa.int32()),
    _field(Col.CUT_FFMPEG_VERSION, pa.string()),
    _field(Col.SOUND_MEAN_DBFS, pa.float64(), metric=True),
    _field(Col.SOUND_PEAK_DBFS, pa.float64(), metric=True),
    _field(Col.SOUND_AUDIO_GAP_S, pa.float64(), metric=True),
    _field(Col.DECODED, pa.large_binary()),
    _field(Col.AESTHETIC_BACKEND, pa.string()),
    _field(Col.AESTHETIC_LAION_MEAN, pa.float64(), metric=True),
    _field(Col.AESTHETIC_LAION_MIN, pa.float64(), metric=True),
    _field(Col.AESTHETIC_IQ_MEAN, pa.float64(), metric=True),
    _field(Col.AESTHETIC_IQ_MIN, pa.float64(), metric=True),
    _field(Col.AESTHETIC_IQ_SHARPNESS, pa.float64(), component_of=Col.AESTHETIC_IQ_MEAN),
    _field(Col.AESTHETIC_IQ_EXPOSURE, pa.float64(), component_of=Col.AESTHETIC_IQ_MEAN),
    _field(Col.AESTHETIC_IQ_CONTRAST, pa.float64(), component_of=Col.AESTHETIC_IQ_MEAN),
    _field(Col.AESTHETIC_IQ_COLOUR, pa.float64(), component_of=Col.AESTHETIC_IQ_MEAN),
    _field(Col.MOTION_BACKEND, pa.string()),
    _field(Col.MOTION_FLOW_MEAN, pa.float64(), metric=True),
    _field(Col.MOTION_MOVING_FRACTION, pa.float64(), metric=True),
    _field(Col.AV_SYNC_BACKEND, pa.string()),
    _field(Col.AV_SYNC_SCORE, pa.float64(), metric=True),
    _field(Col.AV_SYNC_NUM_WINDOWS, pa.int32(), component_of=Col.AV_SYNC_SCORE),
    _field(Col.AV_SYNC_NUM_AUDIO_PEAKS, pa.int32(), component_of=Col.AV_SYNC_SCORE),
    _field(Col.AV_SYNC_NUM_VIDEO_PEAKS, pa.int32(), component_of=Col.AV_SYNC_SCORE),
    _field(Col.OCR_BACKEND, pa.string()),
    _field(Col.OCR_NUM_REGIONS, pa.int32(), metric=True),
    _field(Col.OCR_TEXT_AREA_FRACTION, pa.float64(), metric=True),
    _field(Col.SPEECH_BACKEND, pa.string()),
    _field(Col.SPEECH_RATIO, pa.float64(), metric=True),
    _field(Col.SPEECH_LONGEST_S, pa.float64(), metric=True),
    _field(Col.SPEECH_MUSIC_RATIO, pa.float64(), metric=True),
    _field(Col.CAPTION_VIDEO_TEXT, pa.string()),
    _field(Col.CAPTION_VIDEO_PROMPT, pa.string()),
    _field(Col.CAPTION_VIDEO_BACKEND, pa.string()),
    _field(Col.CAPTION_AUDIO_TEXT, pa.string()),
    _field(Col.CAPTION_AUDIO_PROMPT, pa.string()),
    _field(Col.CAPTION_AUDIO_BACKEND, pa.string()),
    _field(Col.CAPTION_MERGE_TEXT, pa.string()),
    _field(Col.CAPTION_MERGE_CONFLICT, pa.bool_(), metric=True),
    _field(Col.CAPTION_MERGE_CONFLICT_DETAIL, pa.string()),
    _field(Col.CAPTION_MERGE_UNKNOWN_SOURCE, pa.bool_(), metric=True),
    _field(Col.CAPTION_MERGE_UNKNOWN_SOURCES, _STRING_LIST),
    _field(Col.CAPTION_MERGE_PROMPT, pa.string()),
    _field(Col.CAPTION_MERGE_BACKEND, pa.string()),
    _field(Col.TAXONOMY_EVENT_SCENARIO, pa.string()),
    _field(Col.TAXONOMY_VISUAL_STYLE, pa.string()),
    _field(Col.TAXONOMY_SOUND_TYPE, _STRING_LIST),
    _field(Col.TAXONOMY_SPATIAL_COMPOSITION, _STRING_LIST),
    _field(Col.TAXONOMY_TEMPORAL_COMPOSITION, pa.string()),
    _field(Col.TAXONOMY_PROMPT, pa.string()),
    _field(Col.TAXONOMY_BACKEND, pa.string()),
    _field(Col.CONTENT_NUM_OTHER_SOUND_TYPES, pa.int32(), metric=True),
]


#: Source columns a clip row carries, so every shard row is self-describing.
INHERITED_COLUMNS: tuple[str, ...] = (Col.INPUT,) + tuple(
    f.name for f in _SOURCE_FIELDS if f.name.startswith(("src_", "probe_"))
)


def _versioned(fields: list[pa.Field], table: str) -> pa.Schema:
    return pa.schema(fields, metadata={_VERSION_KEY: SCHEMA_VERSION.encode(), b"javis.table": table.encode()})


#: Every column a row can carry while it moves through the pipeline.
WORK_SCHEMA = _versioned(_LEDGER_FIELDS + _SOURCE_FIELDS + _CLIP_FIELDS, "work")
_TRANSIENT = (Col.DECODED,)

#: ``sources/``: one row per source video (no clip columns).
SOURCE_SCHEMA = _versioned(_LEDGER_FIELDS + _SOURCE_FIELDS, "sources")
#: ``shards/``: accepted clips with their source metadata.
CLIP_SCHEMA = _versioned([f for f in WORK_SCHEMA if f.name not in _TRANSIENT], "clips")
#: ``ledger/``: every source and clip with its terminal state and all raw scores (no media bytes).
LEDGER_SCHEMA = _versioned([f for f in WORK_SCHEMA if f.name not in (Col.MEDIA_BYTES, *_TRANSIENT)], "ledger")
#: ``rejections/<stage>/``: one row per rejected source or clip.
REJECTION_SCHEMA = _versioned(
    [
        WORK_SCHEMA.field(name)
        for name in (
            Col.ID, Col.KIND, Col.SOURCE_ID, Col.INPUT, Col.STAGE, Col.REASON, Col.METRIC, Col.VALUE,
            Col.THRESHOLD, Col.DETAIL, Col.BACKEND, Col.CONFIG_HASH, Col.CLIP_START_S, Col.CLIP_END_S, Col.UPDATED_AT,
            Col.RUN_ID, Col.THUMB_PATH,
        )
    ],
    "rejections",
)  # fmt: skip


class NegCol:
    """Columns of ``negatives/`` (one row per hard negative) and its per-clip ledger."""

    NEGATIVE_ID = "negative_id"
    CLIP_ID = "clip_id"
    SOURCE_ID = "source_id"
    FAMILY = "family"
    OPERATION = "operation"
    PARAMS_JSON = "params_json"  # every drawn parameter: the negative can be rebuilt exactly
    SEED = "seed"  # the family's seed (from the run seed, the clip id and the family)
    MEDIA_PATH = "media_path"  # relative to the output folder
    MEDIA_BYTES = "media_bytes"
    MEDIA_SIZE_BYTES = "media_size_bytes"
    MEDIA_SHA256 = "media_sha256"
    DURATION_S = "duration_s"
    # augment.sync_check (augment/sync_check.py): null when it is off
    SYNC_SCORE = "sync_score"  # the negative's score under augment.sync's backend
    SYNC_POSITIVE_SCORE = "sync_positive_score"  # its clip's score
    SYNC_FLAGGED = "sync_flagged"  # not below the clip's score by augment.sync_margin
    # per-clip ledger of the augment stage
    STATE = "state"
    NUM_NEGATIVES = "num_negatives"
    SKIPPED_JSON = "skipped_json"  # family -> why no operation of it applied
    ERROR_TYPE = "error_type"
    ERROR_MESSAGE = "error_message"


NEGATIVE_SCHEMA = _versioned(
    [
        _field(NegCol.NEGATIVE_ID, pa.string()),
        _field(NegCol.CLIP_ID, pa.string()),
        _field(NegCol.SOURCE_ID, pa.string()),
        _field(NegCol.FAMILY, pa.string()),
        _field(NegCol.OPERATION, pa.string()),
        _field(NegCol.PARAMS_JSON, pa.string()),
        _field(NegCol.SEED, pa.uint64()),
        _field(NegCol.MEDIA_PATH, pa.string()),
        _field(NegCol.MEDIA_BYTES, pa.large_binary()),
        _field(NegCol.MEDIA_SIZE_BYTES, pa.int64()),
        _field(NegCol.MEDIA_SHA256, pa.string()),
        _field(NegCol.DURATION_S, pa.float64()),
        _field(NegCol.SYNC_SCORE, pa.float64()),
        _field(NegCol.SYNC_POSITIVE_SCORE, pa.float64()),
        _field(NegCol.SYNC_FLAGGED, pa.bool_()),
    ],
    "negatives",
)
AUGMENT_LEDGER_SCHEMA = _versioned(
    [
        _field(NegCol.CLIP_ID, pa.string()),
        _field(NegCol.SOURCE_ID, pa.string()),
        _field(NegCol.STATE, pa.string()),
        _field(NegCol.NUM_NEGATIVES, pa.int32()),
        _field(NegCol.SKIPPED_JSON, pa.string()),
        _field(NegCol.ERROR_TYPE, pa.string()),
        _field(NegCol.ERROR_MESSAGE, pa.string()),
    ],
    "augment_ledger",
)


def schema_version(schema: pa.Schema) -> str | None:
    """The version stored in a schema's metadata (``None`` for foreign files)."""
    meta = schema.metadata or {}
    raw = meta.get(_VERSION_KEY)
    return raw.decode() if raw is not None else None


def metric_columns(schema: pa.Schema = WORK_SCHEMA) -> list[str]:
    """Names of the raw-score columns, in schema order."""
    return [f.name for f in schema if (f.metadata or {}).get(b"metric") == b"1"]


def component_columns(schema: pa.Schema = WORK_SCHEMA) -> dict[str, str]:
    """Columns that explain a score, each mapped to the metric column it explains (schema order)."""
    return {f.name: f.metadata[b"component_of"].decode() for f in schema if b"component_of" in (f.metadata or {})}


def conform(rows: Iterable[Mapping[str, Any]] | pa.Table, schema: pa.Schema = WORK_SCHEMA) -> pa.Table:
    """Build a table with exactly ``schema``'s columns: missing ones become nulls.

    Unknown keys raise, so a typo in a stage cannot silently create a column.
    """
    if isinstance(rows, pa.Table):
        table = rows
        missing = [f for f in schema if f.name not in table.column_names]
        for f in missing:
            table = table.append_column(f, pa.nulls(table.num_rows, f.type))
        return table.select(schema.names).cast(schema)
    rows = list(rows)
    known = set(schema.names)
    for row in rows:
        unknown = set(row) - known
        if unknown:
            raise KeyError(f"columns not in schema {schema.metadata.get(b'javis.table')!r}: {sorted(unknown)}")
    return pa.Table.from_pylist(rows, schema=schema)
