"""The one source of the data rules: which studies and reports an actor may see.

:func:`scope_of` turns an actor (its roles, hospital, records) and its active grants into
a :class:`Scope`. A scope has two readings that must always agree (a hypothesis property
test in ``tests/integration/access/test_policy_property.py`` checks that they do, on
both databases):

- :meth:`Scope.admits`: the decision on one study or report, from its facts (producing
  hospital, linked resident, study UID), in Python;
- :meth:`Scope.predicate`: the same rule as a SQL WHERE clause, for searches.

Rules (a study is the unit; its series, instances and reports follow it):

- ``READ_ANY_PATIENT`` (operator, administrator): everything;
- an actor bound to a hospital (hospital system, doctor): what that hospital produced;
- a resident: the records linked to themself and their family members;
- a doctor: the records of a resident who granted access to all of them, and the named
  studies of a resident who granted those (a named grant never covers a held report, which
  has no study yet);
- anything else: nothing. Unknown means no.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement

from cloudfilm.services.kernel.actor import Actor, Permission, Role

Grants = Mapping[int, frozenset[str] | None]
"""resident id -> granted StudyInstanceUIDs (None: all of that resident's records)."""


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules need to know of one study or report."""

    hospital_id: int
    hospital_code: str
    resident_id: int | None
    """The resident its patient record is *linked* to (conflicts and unmatched: None)."""
    study_uid: str | None
    """None for a report still waiting for its study (held)."""


@dataclass(frozen=True, slots=True)
class Scope:
    """What one actor may see, in a form that both decides and filters."""

    everything: bool = False
    label: str = ""
    hospital_id: int | None = None
    hospital_code: str | None = None
    residents: frozenset[int] = frozenset()
    """Own records (a resident and their family)."""
    granted_all: frozenset[int] = frozenset()
    named: Mapping[int, frozenset[str]] = field(default_factory=dict)
    via_grants: bool = False
    """The actor reaches other hospitals' data through grants (refusal reasons say so)."""

    def _own_hospital(self, facts: Facts) -> bool:
        if self.hospital_id is not None:
            return facts.hospital_id == self.hospital_id
        return bool(self.hospital_code) and facts.hospital_code == self.hospital_code

    def admits(self, facts: Facts) -> tuple[bool, str]:
        """``(allowed, reason)`` for one study or report."""
        if self.everything:
            return True, self.label
        if self._own_hospital(facts):
            return True, "own-hospital"
        rid = facts.resident_id
        if rid is not None:
            if rid in self.residents:
                return True, "own-record"
            if rid in self.granted_all:
                return True, "grant"
            if facts.study_uid is not None and facts.study_uid in self.named.get(rid, ()):
                return True, "grant"
        if self.via_grants:
            return False, ("unlinked" if rid is None else
                           "not-in-grant" if rid in self.named else "no-grant")
        if self.residents:
            return False, "not-own-record"
        if self.hospital_id is not None or self.hospital_code:
            return False, "other-hospital"
        return False, "unknown-actor"

    def predicate(self, visible: Callable[..., ColumnElement[bool]]
                  ) -> ColumnElement[bool] | None:
        """The same rule as a WHERE clause built by ``access_repository.visible_studies``
        or ``visible_reports``; None when everything is visible."""
        if self.everything:
            return None
        granted: dict[int, frozenset[str] | None] = {r: None for r in self.granted_all}
        for resident, uids in self.named.items():
            if resident not in granted and uids:
                granted[resident] = uids
        return visible(hospital_id=self.hospital_id, hospital_code=self.hospital_code,
                       resident_ids=sorted(self.residents), granted=granted)


def scope_of(actor: Actor, grants: Grants | None = None) -> Scope:
    """The actor's scope; ``grants`` are its active grants (only doctors hold any)."""
    if actor.can(Permission.READ_ANY_PATIENT):
        return Scope(everything=True, label=actor.kind)
    if not (actor.can(Permission.READ_STUDY) or actor.can(Permission.READ_REPORT)):
        return Scope()
    if actor.has(Role.SHARE_VIEWER):
        # One study of the resident who shared it, decided and filtered like a named grant.
        return Scope(named={r: frozenset({actor.shared_study_uid})
                            for r in actor.resident_ids if actor.shared_study_uid},
                     label="share link")
    bound = actor.has(Role.HOSPITAL_SYSTEM) or actor.has(Role.DOCTOR)
    via_grants = actor.has(Role.DOCTOR)
    granted: Grants = (grants or {}) if via_grants else {}
    return Scope(
        hospital_id=actor.hospital_id if bound else None,
        hospital_code=actor.hospital_code if bound else None,
        residents=actor.resident_ids if actor.has(Role.RESIDENT) else frozenset(),
        granted_all=frozenset(r for r, uids in granted.items() if uids is None),
        named={r: uids for r, uids in granted.items() if uids is not None},
        via_grants=via_grants,
    )


__all__ = ["Facts", "Grants", "Scope", "scope_of"]
