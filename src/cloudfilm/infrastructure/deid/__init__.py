"""De-identification (pure): PS3.15 Annex E for DICOM, rules + dictionary for report text.

Nothing here touches the database, storage or configuration: callers pass the project's
options, its key and the dictionary of names to remove.
"""

from cloudfilm.infrastructure.deid.profile import (
    BurnedInDecision,
    DeidOptions,
    DeidResult,
    Region,
    deidentify,
)
from cloudfilm.infrastructure.deid.pseudonym import Pseudonymiser
from cloudfilm.infrastructure.deid.text import TextDeidResult, deidentify_text, residual_risk

__all__ = [
    "BurnedInDecision",
    "DeidOptions",
    "DeidResult",
    "Pseudonymiser",
    "Region",
    "TextDeidResult",
    "deidentify",
    "deidentify_text",
    "residual_risk",
]
