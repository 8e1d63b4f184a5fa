"""content: the paper's content-based post-filter (D.3.4), driven by the taxonomy columns.

The paper removes "videos that only contain background music and speech voice" (about half of
what survives annotation). Here a clip's sound is judged from its ``sound_type`` labels: the
sound types other than ``musical`` and ``speech`` are counted (``content_num_other_sound_types``,
stored for every clip) and a clip with none is music and/or speech only:

- ``music_only``: only ``musical``. Kept when ``keep_visible_music`` and the spatial labels put
  the sound's source on screen with nothing off screen (a pianist playing): that music is the
  picture's own sound, which the paper's "background music" does not cover.
- ``speech_only``: only ``speech``.
- ``music_and_speech``: both and nothing else (talk over background music, voice-over).

The speech filter's detector ratios, when the row has them (``speech_music_ratio``,
``speech_ratio``), can veto the language model: with ``min_music_ratio`` (or
``min_speech_ratio``) set, a music (speech) verdict stands only if the detector heard at least
that fraction of music (speech). Off by default: the clips reaching this filter already passed
the speech filter, so its misses are exactly the speech clips this step exists to catch.

Every rejection records metric ``content_num_other_sound_types``, value 0, threshold 1 (keep
at least one other sound type); the detail names the labels and any detector ratios.
No model, no reason to fail but missing taxonomy columns (then the row is ``failed``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from schemas import Col, Kind
from stages.base import Outcome, Rejection, passed, rejected

MUSIC, SPEECH = "musical", "speech"  # sound_type category ids (schemas/taxonomy.py)
ON_SCREEN = frozenset({"single_subject", "multiple_subjects"})  # spatial_composition ids
OFF_SCREEN = "off_screen"
MUSIC_ONLY, SPEECH_ONLY, MUSIC_AND_SPEECH = "music_only", "speech_only", "music_and_speech"
MIN_OTHER_SOUND_TYPES = 1  # the rule itself: at least one sound type besides music and speech


@dataclasses.dataclass(frozen=True)
class ContentConfig:
    enabled: bool = False  # needs the taxonomy step
    reject_music_only: bool = True  # reject clips whose only sound is music
    reject_speech_only: bool = True  # reject clips whose only sound is speech
    reject_music_and_speech: bool = True  # reject clips with music and speech and no other sound
    keep_visible_music: bool = True  # music-only clips whose source is on screen (a performance) are kept
    min_music_ratio: float | None = None  # detector veto for music verdicts (speech_music_ratio); None: off
    min_speech_ratio: float | None = None  # detector veto for speech verdicts (speech_ratio); None: off

    def __post_init__(self) -> None:
        for name in ("min_music_ratio", "min_speech_ratio"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"content.{name} must be in [0, 1] or null, got {value}")


def content_scores(row: Mapping[str, Any]) -> dict[str, Any]:
    """The stored score: how many sound types besides music and speech the clip has."""
    sound_types = row.get(Col.TAXONOMY_SOUND_TYPE)
    if sound_types is None:
        raise ValueError("the clip has no taxonomy_sound_type: run the taxonomy step before content")
    return {Col.CONTENT_NUM_OTHER_SOUND_TYPES: len(set(sound_types) - {MUSIC, SPEECH})}


def _vetoed(ratio: float | None, minimum: float | None) -> bool:
    return minimum is not None and ratio is not None and ratio < minimum


def _verdict(config: ContentConfig, row: Mapping[str, Any]) -> str | None:
    """The reason code the labels and the detector support, before the per-reason switches."""
    sound = set(row[Col.TAXONOMY_SOUND_TYPE]) & {MUSIC, SPEECH}
    music = MUSIC in sound and not _vetoed(row.get(Col.SPEECH_MUSIC_RATIO), config.min_music_ratio)
    speech = SPEECH in sound and not _vetoed(row.get(Col.SPEECH_RATIO), config.min_speech_ratio)
    if music and speech:
        return MUSIC_AND_SPEECH
    if music:
        spatial = set(row.get(Col.TAXONOMY_SPATIAL_COMPOSITION) or ())
        visible = bool(spatial & ON_SCREEN) and OFF_SCREEN not in spatial
        return None if config.keep_visible_music and visible else MUSIC_ONLY
    return SPEECH_ONLY if speech else None


def decide(config: ContentConfig, row: Mapping[str, Any]) -> Rejection | None:
    """Pure: the rejection for a row holding the taxonomy columns and ``content_scores``."""
    if row[Col.CONTENT_NUM_OTHER_SOUND_TYPES] >= MIN_OTHER_SOUND_TYPES:
        return None
    reason = _verdict(config, row)
    enabled = {MUSIC_ONLY: config.reject_music_only, SPEECH_ONLY: config.reject_speech_only}
    if reason is None or not enabled.get(reason, config.reject_music_and_speech):
        return None
    detector = [
        f"{name} {row[col]:.2f}" for name, col in (("music", Col.SPEECH_MUSIC_RATIO), ("speech", Col.SPEECH_RATIO))
        if row.get(col) is not None
    ]  # fmt: skip
    detail = f"sound types {sorted(row[Col.TAXONOMY_SOUND_TYPE])}, spatial {row.get(Col.TAXONOMY_SPATIAL_COMPOSITION)}"
    if detector:
        detail += "; detector ratios: " + ", ".join(detector)
    return Rejection(
        reason, metric=Col.CONTENT_NUM_OTHER_SOUND_TYPES, value=0.0, threshold=MIN_OTHER_SOUND_TYPES, detail=detail
    )


class Content:
    """See the module docstring. Input: ``taxonomy_sound_type``, ``taxonomy_spatial_composition``
    (and ``speech_music_ratio`` / ``speech_ratio`` when present). Output:
    ``content_num_other_sound_types``. Reason codes: ``music_only``, ``speech_only``,
    ``music_and_speech``."""

    name: ClassVar[str] = "content"
    unit: ClassVar[str] = Kind.CLIP
    reasons: ClassVar[tuple[str, ...]] = (MUSIC_ONLY, SPEECH_ONLY, MUSIC_AND_SPEECH)
    requires: ClassVar[tuple[str, ...]] = (Col.TAXONOMY_SOUND_TYPE, Col.TAXONOMY_SPATIAL_COMPOSITION)
    produces: ClassVar[tuple[str, ...]] = (Col.CONTENT_NUM_OTHER_SOUND_TYPES,)

    def __init__(self, config: ContentConfig) -> None:
        self.config = config

    def process(self, row: dict[str, Any]) -> Outcome:
        columns = content_scores(row)
        rejection = decide(self.config, {**row, **columns})
        if rejection is None:
            return passed(**columns)
        return rejected(
            rejection.reason, rejection.metric, rejection.value, rejection.threshold, rejection.detail, **columns
        )
