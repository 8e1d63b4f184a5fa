"""The JavisBench taxonomy (paper appendix D.2, Tab. A2) as data: 5 aspects, 19 categories.

Ids are stable snake_case strings: they are what the taxonomy step stores per clip, what the
keyword step searches for and what balancing counts, so renaming one is a schema change.
Names and definitions are the paper's, verbatim apart from spelling out the examples.

Single-choice or multi-label? The paper does not say; we decide per aspect from what the
categories describe:

- ``event_scenario`` (single): where the clip happens; a scene-cut clip has one setting.
- ``visual_style`` (single): camera footage, 2D or 3D animation exclude each other.
- ``sound_type`` (multi): a clip routinely holds several kinds of sound (rain and a bird and
  a voice). The content post-filter (D.3.4) needs exactly this: it drops clips whose sound
  types are only music and/or speech, which a single label could not express.
- ``spatial_composition`` (multi): "single" and "multiple" subjects exclude each other, but
  either can come with an off-screen source (a dog on screen, a car engine behind the camera).
  The validator enforces that exclusion (``exclusive`` below).
- ``temporal_composition`` (single): one event, events in sequence, or overlapping events.

Single-choice aspects are stored as one string column, multi-label ones as a list column.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from schemas.tables import Col


@dataclasses.dataclass(frozen=True)
class Category:
    id: str
    name: str
    definition: str


@dataclasses.dataclass(frozen=True)
class Aspect:
    id: str
    name: str
    multi_label: bool
    column: str  # the work-row column holding this aspect's answer
    categories: tuple[Category, ...]
    exclusive: tuple[frozenset[str], ...] = ()  # multi-label only: ids that may not appear together

    @property
    def category_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.categories)


ASPECTS: tuple[Aspect, ...] = (
    Aspect(
        "event_scenario",
        "Event Scenario",
        multi_label=False,
        column=Col.TAXONOMY_EVENT_SCENARIO,
        categories=(
            Category(
                "natural",
                "Natural Scenario",
                "Scenes dominated by natural environments with minimal human interference, such as forests, "
                "oceans, and mountains.",
            ),
            Category(
                "urban",
                "Urban Scenario",
                "Outdoor spaces shaped by human activity, including cities, villages, streets, and parks.",
            ),
            Category(
                "living",
                "Living Scenario",
                "Indoor environments where daily human activities occur, like houses, schools, and shopping malls.",
            ),
            Category(
                "industrial",
                "Industrial Scenario",
                "Work-oriented spaces related to industrial or energy activities, such as factories, construction "
                "sites, and mines.",
            ),
            Category(
                "virtual",
                "Virtual Scenario",
                "Imaginative or abstract settings, including virtual worlds, sci-fi cities, and artistic "
                "installations.",
            ),
        ),
    ),
    Aspect(
        "visual_style",
        "Visual Style",
        multi_label=False,
        column=Col.TAXONOMY_VISUAL_STYLE,
        categories=(
            Category(
                "camera_shooting",
                "Camera Shooting",
                "Filmed with handheld, fixed, or drone cameras, including slow-motion footage.",
            ),
            Category(
                "animation_2d",
                "2D-Animate",
                "Styles like hand-drawn animation, flat animation, cartoon styles, or watercolor illustrations.",
            ),
            Category(
                "animation_3d",
                "3D-Animate",
                "Photorealistic styles, sci-fi/magical effects, CG (Computer Graphics), or steampunk aesthetics.",
            ),
        ),
    ),
    Aspect(
        "sound_type",
        "Sound Type",
        multi_label=True,
        column=Col.TAXONOMY_SOUND_TYPE,
        categories=(
            Category(
                "ambient",
                "Ambient Sounds",
                "Sounds that occur naturally in the environment, including both natural and human-influenced "
                "surroundings, like wind, rain, water flow, animal sounds, human activity (e.g., traffic, "
                "construction), and urban noise.",
            ),
            Category(
                "biological",
                "Biological Sounds",
                "Sounds produced by living creatures (e.g. animals, birds): vocalizations such as barking, "
                "chirping, growling, as well as non-vocal human sounds like heartbeat, and other physical noises.",
            ),
            Category(
                "mechanical",
                "Mechanical Sounds",
                "Sounds generated by man-made machines, devices, or mechanical processes: engines, motors, "
                "appliances, any mechanical or electronic noise, and malfunction sounds (e.g., malfunctioning "
                "machinery or alarms).",
            ),
            Category(
                "musical",
                "Musical Sounds",
                "Sounds related to music or musical performance, human- or instrument-generated: singing, "
                "instrumental performances, and background music used in various media formats.",
            ),
            Category(
                "speech",
                "Speech Sounds",
                "Human speech, whether in conversation, dialogue, public speeches, debates, interviews, or "
                "monologues: linguistic communication in formal, informal, or contentious contexts.",
            ),
        ),
    ),
    Aspect(
        "spatial_composition",
        "Spatial Composition",
        multi_label=True,
        column=Col.TAXONOMY_SPATIAL_COMPOSITION,
        categories=(
            Category(
                "single_subject",
                "Single Subject",
                "There is only one primary object or source producing sound in the scene.",
            ),
            Category(
                "multiple_subjects",
                "Multiple Subject",
                "There are multiple primary objects that (or potentially can) make sounds in the scene.",
            ),
            Category(
                "off_screen",
                "Off-screen Sound",
                "The source of the sound is not visible in the scene but logically exists (e.g., a car engine "
                "outside the camera view).",
            ),
        ),
        exclusive=(frozenset({"single_subject", "multiple_subjects"}),),
    ),
    Aspect(
        "temporal_composition",
        "Temporal Composition",
        multi_label=False,
        column=Col.TAXONOMY_TEMPORAL_COMPOSITION,
        categories=(
            Category(
                "single_event",
                "Single Event",
                'The audio contains only one event, with no overlapping sounds. For example, "a single dog '
                'barking without background noise."',
            ),
            Category(
                "sequential_events",
                "Sequential Events",
                'There are multiple events occurring sequentially, with no overlap. For example, "the applause '
                'begins after the music performance ends."',
            ),
            Category(
                "simultaneous_events",
                "Simultaneous Events",
                'Multiple audio sources are present simultaneously, such as "a person speaking while music '
                'plays in the background."',
            ),
        ),
    ),
)

ASPECT_IDS: tuple[str, ...] = tuple(a.id for a in ASPECTS)
#: The columns the taxonomy step writes, in aspect order.
TAXONOMY_COLUMNS: tuple[str, ...] = tuple(a.column for a in ASPECTS)
_BY_ID = {a.id: a for a in ASPECTS}


def aspect(aspect_id: str) -> Aspect:
    try:
        return _BY_ID[aspect_id]
    except KeyError:
        raise ValueError(f"unknown taxonomy aspect {aspect_id!r}; known: {ASPECT_IDS}") from None


def find_category(category_id: str) -> tuple[Aspect, Category]:
    """The aspect and category of a category id (ids are unique across aspects)."""
    for a in ASPECTS:
        for c in a.categories:
            if c.id == category_id:
                return a, c
    raise ValueError(f"unknown taxonomy category {category_id!r}")


def all_category_ids() -> tuple[str, ...]:
    return tuple(c.id for a in ASPECTS for c in a.categories)


def describe() -> str:
    """The taxonomy as prompt text: every aspect, whether it takes one or several ids, and each
    category's id, name and definition."""
    lines = []
    for a in ASPECTS:
        how = "one or more category ids" if a.multi_label else "exactly one category id"
        lines.append(f'Aspect "{a.id}" ({a.name}): {how}.')
        for group in a.exclusive:
            lines.append(f"  Never combine: {', '.join(sorted(group))}.")
        lines += [f'  - "{c.id}" ({c.name}): {c.definition}' for c in a.categories]
    return "\n".join(lines)


def _aspect_schema(a: Aspect, with_ids: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "string"}
    if with_ids:
        item["enum"] = list(a.category_ids)
    if not a.multi_label:
        return item
    return {"type": "array", "items": item, "minItems": 1, "maxItems": len(a.categories)}


def answer_schema(with_ids: bool = True) -> dict[str, Any]:
    """JSON schema of the taxonomy answer: one key per aspect, a string (single-choice) or a
    list of strings (multi-label). ``with_ids=True`` restricts values to the category ids (for
    the prompt and constrained decoding); ``False`` checks only the shape, so a reply with a
    wrong id can be told apart (``off_taxonomy``) from one that does not parse (``unparsable``)."""
    return {
        "type": "object",
        "properties": {a.id: _aspect_schema(a, with_ids) for a in ASPECTS},
        "required": list(ASPECT_IDS),
        "additionalProperties": not with_ids,  # extra keys are ignored when reading, never asked for
    }
