"""The doctor's workstation: find a patient, and see their studies as far as the policy allows.

A doctor (``REQUEST_GRANT``: a signed-in clinician bound to one hospital) finds a patient

- by **national ID** (exact, check digit validated): the resident anywhere in the province;
  the answer says only what the duplicate-exam prompt needs about studies elsewhere (how
  many, with date, modality, body part and hospital level; no images, no report, no
  hospital name unless ``reveal_hospital``), is rate limited per doctor and audited naming
  the resident;
- by **his own hospital's patient ID**, or by **name** (characters or pinyin) among his
  own hospital's records only: the hospital is part of every statement, so no guess of a
  name or an ID reaches another hospital's patients.

A patient is then opened by a *reference* the service made for this doctor (an HMAC of the
doctor's account and the record), never by a bare resident id: a doctor cannot walk the
index by counting ids. The patient view is the policy's answer: own hospital's and granted
studies in full, the others as locked rows with the same minimum as the look-up. Every
opening leaves audit records naming the resident and the studies shown.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db import identity_repository as identity_repo
from cloudfilm.infrastructure.db import workstation_repository as repo
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.services.access.audit import AuditEntry, AuditService, per_resident
from cloudfilm.services.access.otp import Limit, RateLimiter
from cloudfilm.services.access.policy import AccessPolicy
from cloudfilm.services.errors import InvalidInputError, NotAuthorizedError, NotFoundError
from cloudfilm.services.identity.mpi import NATIONAL_ID, parse_national_id
from cloudfilm.services.identity.protection import IdProtector
from cloudfilm.services.kernel.actor import Actor, Permission
from cloudfilm.services.transactions import guarded

REF_DOMAIN = "workstation-ref"
MAX_STUDIES = 500
MAX_MATCHES = 30
NON_IMAGE = frozenset({"SR", "KO", "PR", "DOC"})
_REPORT_RANK = {"preliminary": 1, "final": 2, "amended": 3}
_REF = re.compile(r"^([rp])(\d{1,18})-([0-9a-f]{24})$")
_LOCAL_ID = re.compile(r"^[^\s%_*?]{1,64}$")


@dataclass(frozen=True, slots=True)
class PatientCard:
    """A patient as a search result and the patient view's header."""

    ref: str
    resident_id: int | None
    name: str
    """The own hospital's record name, else the resident's name once granted, else masked."""
    masked: bool
    sex: str
    birth_date: str
    national_id_masked: str
    local_ids: tuple[str, ...]
    """Patient IDs of the doctor's own hospital (empty: not a patient here yet)."""
    elsewhere: int = 0
    """Studies at other hospitals the doctor may not open (locked rows)."""


@dataclass(frozen=True, slots=True)
class WsStudy:
    """A study the doctor may open (own hospital's or granted)."""

    study_instance_uid: str
    study_date: str
    description: str
    accession_number: str
    hospital_name: str
    hospital_code: str
    hospital_level: str
    modalities: tuple[str, ...]
    body_parts: tuple[str, ...]
    series: int
    instances: int
    report_status: str
    report_id: str | None
    own: bool
    """Made at the doctor's own hospital (else: seen through a grant)."""


@dataclass(frozen=True, slots=True)
class LockedStudy:
    """A study elsewhere, as far as a doctor without a grant may know it."""

    study_date: str
    modalities: tuple[str, ...]
    body_parts: tuple[str, ...]
    hospital_level: str
    hospital_name: str
    """Empty unless the platform reveals hospitals before a grant."""
    description: str = ""
    """Never shown before a grant (kept for the title helper: always empty)."""


@dataclass(frozen=True, slots=True)
class PatientRecord:
    card: PatientCard
    studies: list[WsStudy]
    locked: list[LockedStudy]


def mask_name(name: str) -> str:
    """``王**`` of ``王小东`` / ``Wang^XiaoDong=王^小东``; ``W*** X.`` of ``Wang^XiaoDong``."""
    groups = [g for g in name.split("=") if g.strip("^ ")]
    ideographic = next((g for g in groups if re.search(r"[\u3400-\u9fff]", g)), None)
    if ideographic is not None:
        text = ideographic.replace("^", "").strip()
        return text[:1] + "*" * max(len(text) - 1, 1)
    parts = [p for p in (groups[0] if groups else name).split("^") if p.strip()]
    if not parts:
        return "*"
    family = parts[0].strip()
    return family[:1] + "*" * max(len(family) - 1, 1) + (
        f" {parts[1].strip()[:1]}." if len(parts) > 1 else "")


def plain_name(name: str) -> str:
    """A DICOM PN as people write it: the ideographic group joined, else ``Family Given``."""
    groups = [g for g in name.split("=") if g.strip("^ ")]
    ideographic = next((g for g in groups if re.search(r"[\u3400-\u9fff]", g)), None)
    if ideographic is not None:
        return ideographic.replace("^", "").strip()
    return " ".join(p.strip() for p in (groups[0] if groups else name).split("^") if p.strip())


def require_doctor(actor: Actor) -> None:
    """A signed-in clinician of one hospital (the one who may ask for grants)."""
    if (not actor.can(Permission.REQUEST_GRANT) or actor.account_id is None
            or actor.hospital_id is None):
        raise NotAuthorizedError("only a signed-in doctor of a hospital can do this")


class WorkstationService:
    """Patient look-up and the patient view of the doctor's workstation.

    Parameters
    ----------
    db, protector, policy, audit, limiter
        The index; keyed hashes (national IDs, references); the access policy; the audit
        trail; the table-based rate limiter.
    reveal_hospital
        Name the hospital of a locked study (default: only its level).
    lookups_per_hour
        National-ID look-ups a doctor may make in an hour (each confirms that a number
        belongs to someone).
    """

    def __init__(self, db: Database, protector: IdProtector, policy: AccessPolicy,
                 audit: AuditService, limiter: RateLimiter, *, reveal_hospital: bool = False,
                 lookups_per_hour: int = 60) -> None:
        self._db = db
        self._protector = protector
        self._policy = policy
        self._audit = audit
        self._limiter = limiter
        self._reveal = reveal_hospital
        self._lookups = lookups_per_hour

    def hospital(self, actor: Actor) -> tuple[str, str]:
        """(name, level) of the doctor's own hospital, for the workstation's header."""
        require_doctor(actor)
        assert actor.hospital_id is not None
        with guarded(self._db.read()) as session:
            found = repo.hospital_of(session, actor.hospital_id)
            return (found.name, found.level or "") if found is not None else ("", "")

    # -- references ------------------------------------------------------------------------

    def ref(self, actor: Actor, *, resident_id: int | None = None,
            patient_fk: int | None = None) -> str:
        """The doctor's handle of a resident (``r``) or an unlinked own record (``p``)."""
        require_doctor(actor)
        kind, key = ("r", resident_id) if resident_id is not None else ("p", patient_fk)
        if key is None:
            raise InvalidInputError("a reference needs a resident or a patient record")
        return f"{kind}{key}-{self._mac(actor, kind, int(key))}"

    def _mac(self, actor: Actor, kind: str, key: int) -> str:
        return self._protector.lookup_hash(REF_DOMAIN, f"{actor.account_id}:{kind}{key}")[:24]

    def _resolve(self, actor: Actor, ref: str) -> tuple[int | None, int | None]:
        found = _REF.match(ref.strip())
        if found is None or not hmac.compare_digest(
                found.group(3), self._mac(actor, found.group(1), int(found.group(2)))):
            # A reference made for another doctor, or a counted id: one answer.
            raise NotFoundError("no such patient for you")
        key = int(found.group(2))
        return (key, None) if found.group(1) == "r" else (None, key)

    # -- finding -------------------------------------------------------------------------

    def find(self, actor: Actor, query: str) -> list[PatientCard]:
        """A national ID (18 characters), else the own hospital's patient ID, else a name.

        Raises
        ------
        InvalidInputError
            Empty, or an 18-character number whose check digit is wrong.
        RateLimitedError
            Too many national-ID look-ups by this doctor.
        """
        require_doctor(actor)
        text = query.strip()
        if not text:
            raise InvalidInputError("query: give a national ID, a patient ID or a name")
        if re.fullmatch(r"\d{17}[\dXx]", text):
            card = self.find_by_national_id(actor, text)
            return [card] if card is not None else []
        if _LOCAL_ID.match(text):
            found = self.find_by_local_id(actor, text)
            if found or not re.search(r"[A-Za-z\u3400-\u9fff]", text):
                return found
        return self.find_by_name(actor, text)

    def find_by_national_id(self, actor: Actor, national_id: str) -> PatientCard | None:
        require_doctor(actor)
        nid = parse_national_id(national_id)
        id_hash = self._protector.lookup_hash(NATIONAL_ID, nid.number)
        now = datetime.now(UTC)
        with guarded(self._db.write()) as session:
            self._limiter.hit(session, f"ws-lookup:account:{actor.account_id}",
                              Limit(self._lookups, 3600), now, what="national ID look-ups")
            resident = identity_repo.resident_by_national_id(session, id_hash)
            seen = 0
            while resident is not None and resident.merged_into is not None and seen < 16:
                resident, seen = identity_repo.resident_by_id(session, resident.merged_into), \
                    seen + 1
            if resident is None:
                self._audit.record(session, actor=actor, action="workstation.lookup",
                                   outcome="allowed", reason="not-indexed",
                                   detail={"by": "national_id", "found": False})
                return None
            card = self._card(session, actor, resident.id, None)
            self._audit.record(session, actor=actor, action="workstation.lookup",
                               outcome="allowed", resident_id=resident.id,
                               reason="national-id",
                               detail={"by": "national_id", "elsewhere": card.elsewhere,
                                       "here": len(card.local_ids)})
            return card

    def find_by_local_id(self, actor: Actor, patient_id: str) -> list[PatientCard]:
        require_doctor(actor)
        assert actor.hospital_id is not None
        with guarded(self._db.write()) as session:
            rows = repo.own_patients_by_local_id(session, actor.hospital_id,
                                                 patient_id.strip()[:64])
            return self._cards(session, actor, rows, by="patient_id")

    def find_by_name(self, actor: Actor, name: str) -> list[PatientCard]:
        require_doctor(actor)
        assert actor.hospital_id is not None
        term = re.sub(r"[\s^=]+", "", name.strip())
        if not term or any(c in term for c in "%_*?\\"):
            raise InvalidInputError("name: give a name or a part of it, without wildcards")
        with guarded(self._db.write()) as session:
            rows = repo.own_patients_by_name(session, actor.hospital_id, term[:64],
                                             MAX_MATCHES)
            return self._cards(session, actor, rows, by="name")

    def _cards(self, session: Session, actor: Actor, rows: list[Any], *,
               by: str) -> list[PatientCard]:
        cards: list[PatientCard] = []
        seen: set[int] = set()
        for row in rows:
            resident = row.resident_id if row.state == "linked" else None
            if resident is not None:
                if resident in seen:
                    continue
                seen.add(resident)
            cards.append(self._card(session, actor, resident, None if resident else row.id))
        self._audit.record_many(session, [AuditEntry(
            actor, "workstation.search", "allowed", resident_id=c.resident_id,
            reason="own-hospital", detail={"by": by, "matches": len(cards)})
            for c in cards] or [AuditEntry(actor, "workstation.search", "allowed",
                                           reason="own-hospital",
                                           detail={"by": by, "matches": 0})])
        return cards

    # -- the patient view -------------------------------------------------------------------

    def open(self, actor: Actor, ref: str) -> PatientRecord:
        """The patient of ``ref``: studies the doctor may open in full, the others locked.

        Raises
        ------
        NotFoundError
            Not a reference made for this doctor.
        """
        require_doctor(actor)
        resident_id, patient_fk = self._resolve(actor, ref)
        with guarded(self._db.write()) as session:
            if patient_fk is not None:
                row = repo.patient_row(session, patient_fk)
                if row is None or row.hospital_id != actor.hospital_id:
                    raise NotFoundError("no such patient for you")
                if row.state == "linked" and row.resident_id is not None:
                    # Linked since the reference was made: the resident's whole record.
                    resident_id, patient_fk = int(row.resident_id), None
            rows = repo.patient_studies(session, resident_id=resident_id,
                                        patient_fk=patient_fk, limit=MAX_STUDIES)
            visible = repo.visible_ids(session, [r.id for r in rows],
                                       self._policy.filter(session, actor))
            card = self._card(session, actor, resident_id, patient_fk, known=(rows, visible))
            ids = [r.id for r in rows]
            facts = _series_by_study(repo.series_facts(session, ids))
            reports = _best_reports(repo.reports_of(session, [i for i in ids if i in visible]))
            studies: list[WsStudy] = []
            locked: list[LockedStudy] = []
            for r in rows:
                modalities, parts = facts.get(r.id, ((), ()))
                if r.id in visible:
                    report = reports.get(r.id)
                    studies.append(WsStudy(
                        r.study_instance_uid, r.study_date or "", r.study_description or "",
                        r.accession_number or "", r.hospital_name or "", r.hospital_code,
                        r.hospital_level or "", modalities, parts, r.num_series,
                        r.num_instances, report[1] if report else "none",
                        report[0] if report else None, r.hospital_id == actor.hospital_id))
                else:
                    locked.append(LockedStudy(r.study_date or "", modalities, parts,
                                              r.hospital_level or "",
                                              (r.hospital_name or "") if self._reveal else ""))
            entries = per_resident(
                actor, "metadata", "study", "",
                {s.study_instance_uid: resident_id for s in studies}, key="studies",
                reason="workstation", detail={"view": "workstation.patient",
                                              "locked": len(locked)})
            self._audit.record_many(session, entries)
            return PatientRecord(card, studies, locked)

    def _card(self, session: Session, actor: Actor, resident_id: int | None,
              patient_fk: int | None, *,
              known: tuple[list[Any], set[int]] | None = None) -> PatientCard:
        """The card of a patient; ``known``: the studies and visible ids when the caller
        read them already (the patient view), else read here."""
        assert actor.hospital_id is not None
        ref = self.ref(actor, resident_id=resident_id, patient_fk=patient_fk)
        if resident_id is None:
            assert patient_fk is not None
            row = repo.patient_row(session, patient_fk)
            return PatientCard(ref, None, plain_name(row.patient_name or ""), False,
                               row.sex or "", row.birth_date or "", "", (row.patient_id,))
        resident = identity_repo.resident_by_id(session, resident_id)
        if resident is None:
            raise NotFoundError("no such patient for you")
        own = repo.own_records_of(session, resident_id, actor.hospital_id)
        if known is None:
            rows = repo.patient_studies(session, resident_id=resident_id, patient_fk=None,
                                        limit=MAX_STUDIES)
            visible = repo.visible_ids(session, [r.id for r in rows],
                                       self._policy.filter(session, actor))
        else:
            rows, visible = known
        granted = bool(self._policy.grants(session, actor, [resident_id]))
        named = bool(own) or granted
        name = own[0].patient_name if own and own[0].patient_name else resident.name
        return PatientCard(
            ref, resident_id, plain_name(name) if named else mask_name(resident.name),
            not named, resident.sex or "", resident.birth_date or "",
            resident.national_id_masked or "", tuple(o.patient_id for o in own),
            sum(1 for r in rows if r.id not in visible))


def _series_by_study(rows: list[Any]) -> dict[int, tuple[tuple[str, ...], tuple[str, ...]]]:
    modalities: dict[int, dict[str, None]] = {}
    parts: dict[int, dict[str, None]] = {}
    for s in rows:
        if s.modality and s.modality not in NON_IMAGE:
            modalities.setdefault(s.study_fk, {})[s.modality] = None
        if s.body_part_examined:
            parts.setdefault(s.study_fk, {})[s.body_part_examined.upper()] = None
    return {k: (tuple(modalities.get(k, {})), tuple(parts.get(k, {})))
            for k in set(modalities) | set(parts)}


def _best_reports(rows: list[Any]) -> dict[int, tuple[str, str]]:
    best: dict[int, tuple[str, str]] = {}
    for r in rows:
        found = best.get(r.study_fk)
        if found is None or _REPORT_RANK.get(r.status, 0) >= _REPORT_RANK.get(found[1], 0):
            best[r.study_fk] = (r.public_id, r.status)
    return best
