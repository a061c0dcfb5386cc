"""Who sees which hospitals on the dashboard.

A platform administrator (``stats.province``) sees the province; a health bureau its area
(``Actor.area``: the registry's city, or city/county); a hospital administrator its own
hospital, with the province's averages beside it. No patient data is in any figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloudfilm.services.errors import NotAuthorizedError
from cloudfilm.services.kernel.actor import Actor, Permission, Role


@dataclass(frozen=True, slots=True)
class Scope:
    level: str
    """province / area / hospital"""
    label: str
    hospital_ids: tuple[int, ...] | None
    """None: every hospital."""

    @property
    def is_province(self) -> bool:
        return self.hospital_ids is None


def scope_of(actor: Actor, hospitals: list[Any]) -> Scope:
    """The actor's scope among ``hospitals`` (registry rows with id, city, county, code).

    Raises
    ------
    NotAuthorizedError
        The actor may not see the dashboard, or its account names no area or hospital.
    """
    if actor.can(Permission.READ_PROVINCE_STATS):
        return Scope("province", "province", None)
    if not actor.can(Permission.READ_DASHBOARD):
        raise NotAuthorizedError("the dashboard is for the health commission, health bureaus "
                                 "and hospital administrators")
    if actor.has(Role.HEALTH_BUREAU):
        if not actor.area:
            raise NotAuthorizedError("this health bureau account has no area")
        city, _, county = actor.area.partition("/")
        ids = tuple(h.id for h in hospitals
                    if h.city == city and (not county or h.county == county))
        return Scope("area", actor.area, ids)
    if actor.hospital_id is None:
        raise NotAuthorizedError("this account belongs to no hospital")
    return Scope("hospital", actor.hospital_code or str(actor.hospital_id), (actor.hospital_id,))
