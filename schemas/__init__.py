"""Arrow schemas: the single source of column names for every javis table.

Code refers to columns through :class:`Col`, never through ad-hoc strings.
"""

from schemas.tables import (
    CLIP_SCHEMA,
    INHERITED_COLUMNS,
    LEDGER_SCHEMA,
    REJECTION_SCHEMA,
    SCHEMA_VERSION,
    SOURCE_SCHEMA,
    WORK_SCHEMA,
    Col,
    Kind,
    State,
    conform,
    metric_columns,
    schema_version,
)

__all__ = [
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
    "conform",
    "metric_columns",
    "schema_version",
]
