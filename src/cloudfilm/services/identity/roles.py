"""Who may do what in the identity domain: the patient index and the hospital registry
are permissions of the one model (``services.kernel.Permission``); these helpers only add
the identity domain's messages and the "own hospital" rule of a registration feed.
"""

from __future__ import annotations

from cloudfilm.services.errors import NotAuthorizedError
from cloudfilm.services.kernel.actor import Actor, Permission


def actor_label(actor: Actor) -> str:
    """The text ``identity_event.actor`` keeps of an actor (its stable audit subject)."""
    return f"{actor.kind}:{actor.subject}"[:64]


def require_index_admin(actor: Actor) -> None:
    """The patient index: read, link, unlink, merge (platform administrators, the local
    operator)."""
    if not actor.can(Permission.MANAGE_PATIENT_INDEX):
        raise NotAuthorizedError("platform administrators only")


def require_hospital_admin(actor: Actor) -> None:
    """The hospital registry and its API credentials."""
    if not actor.can(Permission.MANAGE_HOSPITALS):
        raise NotAuthorizedError("platform administrators only")


def require_feed_of(actor: Actor, hospital_code: str) -> None:
    """A registration feed speaks for its own hospital only (the index's administrators
    for any)."""
    if actor.can(Permission.MANAGE_PATIENT_INDEX):
        return
    if not actor.can(Permission.REGISTER_PATIENTS) or actor.hospital_code is None \
            or actor.hospital_code != hospital_code:
        raise NotAuthorizedError("a hospital registers patients of its own hospital only "
                                 "(Authorization: Bearer cfh_... of that hospital)")
