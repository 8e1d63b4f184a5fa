"""Arrow schemas: the single source of column names for every javis table.

Code refers to columns through :class:`Col`, never through ad-hoc strings.
"""

from schemas.tables import (
    AUGMENT_LEDGER_SCHEMA,
    CLIP_SCHEMA,
    INHERITED_COLUMNS,
    LEDGER_SCHEMA,
    NEGATIVE_SCHEMA,
    REJECTION_SCHEMA,
    SCHEMA_VERSION,
    SOURCE_SCHEMA,
    WORK_SCHEMA,
    Col,
    Kind,
    NegCol,
    State,
    component_columns,
    conform,
    metric_columns,
    schema_version,
)
from schemas.taxonomy import ASPECT_IDS, ASPECTS, TAXONOMY_COLUMNS, Aspect, Category

__all__ = [
    "ASPECTS",
    "ASPECT_IDS",
    "Aspect",
    "Category",
    "TAXONOMY_COLUMNS",
    "AUGMENT_LEDGER_SCHEMA",
    "NEGATIVE_SCHEMA",
    "NegCol",
    "CLIP_SCHEMA",
    "INHERITED_COLUMNS",
    "LEDGER_SCHEMA",
    "REJECTION_SCHEMA",
    "SCHEMA_VERSION",
    "SOURCE_SCHEMA",
    "WORK_SCHEMA",
    "Col",
    "Kind",
    "State",
    "component_columns",
    "conform",
    "metric_columns",
    "schema_version",
]
