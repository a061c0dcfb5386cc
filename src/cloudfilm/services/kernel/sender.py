"""Who delivered an object (shared by archive ingest and report intake)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sender:
    """Who delivered an object: the hospital it is recorded for, and through which door."""

    hospital_code: str = "LOCAL"
    hospital_name: str = "Local uploads"
    door: str = "import"
    remote: str = ""
