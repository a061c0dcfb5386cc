"""Who may do what in the identity domain, in small named helpers.

Kept apart on purpose: the permission model (``Permission`` and ``enforce``) replaces
these ``actor.kind`` tests in one place later, without touching the services' logic.
"""

from __future__ import annotations

from cloudfilm.services.access.actor import Actor
from cloudfilm.services.errors import NotAuthorizedError


def actor_label(actor: Actor) -> str:
    """The text ``identity_event.actor`` keeps of an actor (its stable audit subject)."""
    return f"{actor.kind}:{actor.subject}"[:64]


def is_platform_admin(actor: Actor) -> bool:
    return actor.kind in ("admin", "operator")


def require_platform_admin(actor: Actor) -> None:
    """Platform administrators and the local operator: the registry and the index."""
    if not is_platform_admin(actor):
        raise NotAuthorizedError("platform administrators only")


def require_feed_of(actor: Actor, hospital_code: str) -> None:
    """A registration feed speaks for its own hospital only (or the platform's operator)."""
    if is_platform_admin(actor):
        return
    if actor.kind != "hospital" or actor.hospital_code != hospital_code:
        raise NotAuthorizedError("a hospital registers patients of its own hospital only "
                                 "(Authorization: Bearer cfh_... of that hospital)")
