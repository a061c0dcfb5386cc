"""A configured plug-in (``ai.plugins``) that keeps what it was given, to check what an
algorithm approved for de-identified input really sees."""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.dataset import Dataset

from cloudfilm.infrastructure.ai.nodules import detect as _detect
from cloudfilm.infrastructure.ai.plugin import Finding

SEEN: list[Dataset] = []


def detect(series: Sequence[Dataset]) -> list[Finding]:
    SEEN.extend(series)
    return _detect(series)
