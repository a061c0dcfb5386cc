"""DICOM Unique Identifier (UID) validation and generation.

References
----------
PS3.5 9.1 (UID encoding rules), PS3.5 B.2 (UUID-derived UIDs under the ``2.25`` root).
"""

from __future__ import annotations

import re
import uuid

__all__ = ["MAX_UID_LENGTH", "is_valid_uid", "new_uid"]

#: Maximum length of a UID value (PS3.5 9.1).
MAX_UID_LENGTH = 64

# One or more components separated by single dots; a component is "0" or a number without
# a leading zero (PS3.5 9.1). ``fullmatch`` rejects empty components and trailing dots.
_UID_RE = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")


def is_valid_uid(s: str) -> bool:
    """Return whether `s` is a syntactically valid DICOM UID.

    Parameters
    ----------
    s : str
        The candidate UID, without padding (a trailing NUL or space makes it invalid).

    Returns
    -------
    bool
        ``True`` if `s` has 1 to 64 characters, only digits and dots, no empty component and
        no component with a leading zero (except the single digit ``0``).

    References
    ----------
    PS3.5 9.1
    """
    if not isinstance(s, str) or not 0 < len(s) <= MAX_UID_LENGTH:
        return False
    # ``isascii`` first: ``re`` ``[0-9]`` is ASCII-only, but be explicit about it.
    return s.isascii() and _UID_RE.fullmatch(s) is not None


def new_uid() -> str:
    """Return a new globally unique UID in the ``2.25.<UUID as integer>`` form.

    Returns
    -------
    str
        A UID of at most 44 characters derived from a random (version 4) UUID.

    References
    ----------
    PS3.5 B.2
    """
    return f"2.25.{uuid.uuid4().int}"
