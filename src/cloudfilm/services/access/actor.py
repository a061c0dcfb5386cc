"""Who is asking: the one description of a caller that every door builds and every service
passes to the access policy (``services.access.policy``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ActorKind = Literal["operator", "hospital", "doctor", "resident", "admin"]


@dataclass(frozen=True, slots=True)
class Actor:
    """A caller, as established by a door's authentication.

    ``operator``: the embedded platform's local operator (unauthenticated loopback requests
    when ``security.local_mode`` is open); ``hospital``: a hospital system (API credential or
    registered AE title); ``doctor`` and ``resident``: signed-in people; ``admin``: a
    platform (health commission) administrator.
    """

    kind: ActorKind
    subject: str
    """Stable id for the audit trail: hospital code, ``account:<id>``, ``local``."""
    hospital_id: int | None = None
    hospital_code: str | None = None
    account_id: int | None = None
    resident_ids: frozenset[int] = field(default_factory=frozenset)
    """For a resident: themself and the family members they may act for."""
    department: str = ""
    display: str = ""
    """Shown to residents in "who looked at my data" (doctor's name, hospital's name)."""
    address: str = ""
    """Hashed client address or calling AE title; never a raw IP in logs."""


LOCAL_OPERATOR = Actor(kind="operator", subject="local", display="local operator")
