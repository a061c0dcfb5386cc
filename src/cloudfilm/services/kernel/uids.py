"""UID types shared by the archive, the reports and the access policy."""

from __future__ import annotations

from typing import NewType

StudyUID = NewType("StudyUID", str)
"""A StudyInstanceUID (at most 64 characters, PS3.5 9.1)."""

UID_MAX = 64
"""The longest UID (PS3.5 9.1); longer input is cut before it reaches the index."""
