"""The preference tables written by ``javis preference`` (``pipeline/preference.py``) and read by
the AV-DPO training stage (``model/data.py``, ``javis train dpo``).

A preference folder ``PREF`` holds:

- ``pairs/shard-*.parquet`` (:data:`PAIR_SCHEMA`): one row per preference pair: the prompt's
  DiT text states and both candidates' latents (packed as in ``schemas/latents.py``: raw bytes,
  ``<name>_shape``, ``<name>_dtype``), their media paths (relative to ``PREF``), and the scores
  that made the pair;
- ``candidates.parquet``: one row per generated candidate, in exactly one state (paired,
  unpaired with a reason, or failed with a stage and error) with every raw and normalised reward;
- ``decisions.parquet``: every pair considered, formed or not, and why;
- ``prompts.parquet``: one row per prompt with its per-reward normalisation (mean, std, floored std);
- ``media/candidates/<prompt_id>/<candidate_id>.mp4`` and ``latents/<prompt_id>/<candidate_id>.npz``:
  every generated candidate's media and latents (the pair shards copy the paired ones' latents);
- ``manifest.json``: checkpoint, preset, latent spec name, reward backends, normalisation and
  margins, counts.

Column names live here and nowhere else.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.latents import _tensor_fields, _versioned

PREFERENCE_SCHEMA_VERSION = "1.0.0"


class PrefCol:
    """Columns of ``pairs/shard-*.parquet``."""

    PAIR_ID = "pair_id"  # "<winner_id>>" "<loser_id>": stable across reruns
    PROMPT_ID = "prompt_id"  # blake2b of the prompt text
    PROMPT = "prompt"
    BUCKET = "bucket"  # "HxWxT" of the generated candidates: rows of one bucket share tensor shapes
    WINNER_ID = "winner_id"  # candidate ids (``<prompt_id>-<k>``)
    LOSER_ID = "loser_id"
    WINNER_MEDIA = "winner_media_path"  # MP4 (H.264 + AAC), relative to the preference folder
    LOSER_MEDIA = "loser_media_path"
    WINNER_VIDEO = "winner_video_latent"  # (video_channels, T_lat, H_lat, W_lat), the sampled latent
    WINNER_AUDIO = "winner_audio_latent"  # (audio_channels, A_lat, F_lat)
    LOSER_VIDEO = "loser_video_latent"
    LOSER_AUDIO = "loser_audio_latent"
    TEXT = "text_states"  # the prompt's DiT text states (num_tokens, text_dim), trimmed to valid tokens
    TEXT_LEN = "text_len"  # the padded length the model expects
    WINNER_OVERALL = "winner_overall"  # normalised overall reward of the winner
    LOSER_OVERALL = "loser_overall"
    OVERALL_GAP = "overall_gap"  # winner_overall - loser_overall (>= the configured margin)
    MIN_MODALITY_GAP = "min_modality_gap"  # min over modalities of winner - loser (>= -the margin)
    SCORES = "scores"  # JSON: both candidates' raw, normalised and per-modality scores
    CHECKPOINT = "checkpoint"  # the checkpoint folder that generated both candidates
    RUN_ID = "run_id"


TENSOR_COLUMNS = (PrefCol.WINNER_VIDEO, PrefCol.WINNER_AUDIO, PrefCol.LOSER_VIDEO, PrefCol.LOSER_AUDIO, PrefCol.TEXT)

PAIR_SCHEMA = _versioned(
    [
        pa.field(PrefCol.PAIR_ID, pa.string()),
        pa.field(PrefCol.PROMPT_ID, pa.string()),
        pa.field(PrefCol.PROMPT, pa.string()),
        pa.field(PrefCol.BUCKET, pa.string()),
        pa.field(PrefCol.WINNER_ID, pa.string()),
        pa.field(PrefCol.LOSER_ID, pa.string()),
        pa.field(PrefCol.WINNER_MEDIA, pa.string()),
        pa.field(PrefCol.LOSER_MEDIA, pa.string()),
        *_tensor_fields(PrefCol.WINNER_VIDEO),
        *_tensor_fields(PrefCol.WINNER_AUDIO),
        *_tensor_fields(PrefCol.LOSER_VIDEO),
        *_tensor_fields(PrefCol.LOSER_AUDIO),
        *_tensor_fields(PrefCol.TEXT),
        pa.field(PrefCol.TEXT_LEN, pa.int32()),
        pa.field(PrefCol.WINNER_OVERALL, pa.float64()),
        pa.field(PrefCol.LOSER_OVERALL, pa.float64()),
        pa.field(PrefCol.OVERALL_GAP, pa.float64()),
        pa.field(PrefCol.MIN_MODALITY_GAP, pa.float64()),
        pa.field(PrefCol.SCORES, pa.string()),
        pa.field(PrefCol.CHECKPOINT, pa.string()),
        pa.field(PrefCol.RUN_ID, pa.string()),
    ],
    "preference_pairs",
)
PAIRS_DIR, CANDIDATES_FILE, DECISIONS_FILE, MANIFEST_FILE = "pairs", "candidates.parquet", "decisions.parquet", "manifest.json"

# ---- the ledger: every candidate, every considered pair, every prompt (added by javis preference)

PROMPTS_FILE = "prompts.parquet"
MEDIA_DIR = "media/candidates"  # <prompt_id>/<candidate_id>.mp4 under the preference folder


class CandState:
    PAIRED, UNPAIRED, FAILED = "paired", "unpaired", "failed"


class CandCol:
    """Columns of ``candidates.parquet``: one row per candidate, in exactly one state."""

    CANDIDATE_ID = "candidate_id"  # "<prompt_id>-<k>"
    PROMPT_ID = "prompt_id"
    PROMPT = "prompt"
    INDEX = "candidate_index"  # k in 0 .. K-1
    SEED = "seed"  # the candidate's sampling seed (from the run seed, the prompt id and k)
    STATE = "state"  # CandState
    ROLE = "role"  # paired: "winner" | "loser"
    PAIR_ID = "pair_id"  # paired: the pair's id (PrefCol.PAIR_ID)
    REASON = "reason"  # unpaired: too_few_scored_candidates | no_eligible_pair | partners_taken
    FAILED_STAGE = "failed_stage"  # failed: "generate" | "score"
    ERROR_TYPE = "error_type"
    ERROR_MESSAGE = "error_message"
    MEDIA = "media_path"  # the MP4, relative to the preference folder (null when generation failed)
    BUCKET = "bucket"  # "HxWxT"
    RAW = "raw_scores"  # JSON: reward name -> raw score
    DETAILS = "reward_details"  # JSON: reward name -> the measures behind the score
    NORMALISED = "normalised_scores"  # JSON: reward name -> per-prompt z-score
    SCORE_AUDIO = "score_audio"  # modality scores: mean of the modality's z-scores (null: not scored)
    SCORE_VIDEO = "score_video"
    SCORE_SEMANTIC = "score_semantic"
    SCORE_SYNC = "score_sync"
    OVERALL = "overall"  # weighted mean of the scored modalities


class DecCol:
    """Columns of ``decisions.parquet``: one row per unordered pair of a prompt's scored candidates,
    oriented winner = higher overall score."""

    PROMPT_ID = "prompt_id"
    WINNER_ID = "winner_id"
    LOSER_ID = "loser_id"
    FORMED = "formed"
    REASON = "reason"  # formed | overall_gap_below_margin | worse_in_<modality> | candidate_already_paired | max_pairs_reached
    PAIR_ID = "pair_id"  # formed pairs only
    OVERALL_GAP = "overall_gap"
    MIN_MODALITY_GAP = "min_modality_gap"
    WORST_MODALITY = "worst_modality"
    MODALITY_GAPS = "modality_gaps"  # JSON: modality -> winner - loser


class PromptCol:
    """Columns of ``prompts.parquet``: one row per prompt, with its normalisation."""

    PROMPT_ID = "prompt_id"
    PROMPT = "prompt"
    SOURCE = "prompt_source"  # where it came from: a clip's caption column, src_title, or the prompt file
    NUM_CANDIDATES = "num_candidates"
    NUM_SCORED = "num_scored"
    NUM_FAILED = "num_failed"
    NUM_PAIRS = "num_pairs"
    NORMALISATION = "normalisation"  # JSON: reward -> {"mean", "std", "std_used"} over the scored candidates


_SCORE_FIELDS = [pa.field(c, pa.float64()) for c in
                 (CandCol.SCORE_AUDIO, CandCol.SCORE_VIDEO, CandCol.SCORE_SEMANTIC, CandCol.SCORE_SYNC, CandCol.OVERALL)]  # fmt: skip
CANDIDATE_SCHEMA = _versioned(
    [pa.field(c, pa.string()) for c in (CandCol.CANDIDATE_ID, CandCol.PROMPT_ID, CandCol.PROMPT)]
    + [pa.field(CandCol.INDEX, pa.int32()), pa.field(CandCol.SEED, pa.int64())]
    + [pa.field(c, pa.string()) for c in (CandCol.STATE, CandCol.ROLE, CandCol.PAIR_ID, CandCol.REASON,
                                          CandCol.FAILED_STAGE, CandCol.ERROR_TYPE, CandCol.ERROR_MESSAGE,
                                          CandCol.MEDIA, CandCol.BUCKET, CandCol.RAW, CandCol.DETAILS,
                                          CandCol.NORMALISED)]  # fmt: skip
    + _SCORE_FIELDS,
    "preference_candidates",
)
DECISION_SCHEMA = _versioned(
    [pa.field(c, pa.string()) for c in (DecCol.PROMPT_ID, DecCol.WINNER_ID, DecCol.LOSER_ID)]
    + [pa.field(DecCol.FORMED, pa.bool_()), pa.field(DecCol.REASON, pa.string()), pa.field(DecCol.PAIR_ID, pa.string())]
    + [pa.field(c, pa.float64()) for c in (DecCol.OVERALL_GAP, DecCol.MIN_MODALITY_GAP)]
    + [pa.field(DecCol.WORST_MODALITY, pa.string()), pa.field(DecCol.MODALITY_GAPS, pa.string())],
    "preference_decisions",
)
PROMPT_SCHEMA = _versioned(
    [pa.field(c, pa.string()) for c in (PromptCol.PROMPT_ID, PromptCol.PROMPT, PromptCol.SOURCE)]
    + [pa.field(c, pa.int32()) for c in (PromptCol.NUM_CANDIDATES, PromptCol.NUM_SCORED, PromptCol.NUM_FAILED,
                                         PromptCol.NUM_PAIRS)]  # fmt: skip
    + [pa.field(PromptCol.NORMALISATION, pa.string())],
    "preference_prompts",
)
