"""Who is asking: the one description of a caller that every door builds and every service
passes to the access policy, with its roles and what they permit.

A role is what an actor *is* (a doctor, a hospital administrator, a resident); a
:class:`Permission` is what it may *do*. ``ROLE_PERMISSIONS`` is the only place that maps
one to the other; services ask ``actor.can(permission)`` (or the policy's ``require`` /
``enforce``, which also audit) instead of testing ``actor.kind``. Which *data* a permitted
actor sees (its own hospital, its own records, granted ones) is the policy's rule
(``services.access.rules``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

ActorKind = Literal["operator", "hospital", "doctor", "resident", "admin", "bureau",
                    "algorithm"]


class Role(StrEnum):
    OPERATOR = "operator"
    """The embedded platform's local operator (loopback in open local mode)."""
    ADMIN = "admin"
    """A platform (health commission) administrator."""
    HOSPITAL_SYSTEM = "hospital_system"
    """A hospital's PACS/RIS/HIS: an API credential or a registered AE title."""
    DOCTOR = "doctor"
    """A signed-in clinician, bound to one hospital."""
    HOSPITAL_ADMIN = "hospital_admin"
    """A hospital's own administrator (manages its accounts, resets registrations after an
    in-person ID check, reviews in-person and break-glass grants)."""
    RESIDENT = "resident"
    """A signed-in patient (for themself and the family members they may act for)."""
    SHARE_VIEWER = "share_viewer"
    """Someone holding a resident's share link: sees the one study the link names
    (``Actor.shared_study_uid``), nothing else, and may do nothing."""
    HEALTH_BUREAU = "health_bureau"
    """A city or county health bureau (卫健局): the commission's dashboard for its area
    (``Actor.area``), no patient data."""
    AI_ALGORITHM = "ai_algorithm"
    """An approved AI algorithm (an in-process plug-in or an external engine with its
    ``cfa_`` credential): claims UPS workitems made for it and reads only the studies of
    the workitems it holds in progress (``Actor.algorithm_id``; services/ai)."""


class Permission(StrEnum):
    # -- on patient data (decided per resource by the policy's rules) -------------------
    READ_STUDY = "study.read"
    """See a study, its series and instances (search, retrieve, render)."""
    READ_REPORT = "report.read"
    """See a diagnostic report (read, render, search)."""
    READ_ANY_PATIENT = "patient.read_any"
    """See every study and report without a grant (still audited)."""
    # -- without a resource ---------------------------------------------------------------
    STORE = "archive.store"
    """Send studies and reports (recorded for the sender's own hospital)."""
    STORE_FOR_ANY_HOSPITAL = "archive.store_any"
    """Import for any hospital (bulk imports, the demo)."""
    REQUEST_GRANT = "grant.request"
    DECIDE_GRANT = "grant.decide"
    REVIEW_GRANTS = "grant.review"
    READ_OWN_ACCESS_LOG = "audit.own_log"
    """Read "who looked at my data"."""
    READ_AUDIT = "audit.read"
    MANAGE_HOSPITALS = "hospital.manage"
    MANAGE_PEERS = "peer.manage"
    MANAGE_ACCOUNTS = "account.manage"
    MANAGE_HOSPITAL_ACCOUNTS = "account.manage_own_hospital"
    RESET_REGISTRATION = "account.reset_registration"
    READ_SMS_OUTBOX = "sms.outbox"
    READ_TIMELINESS = "stats.timeliness"
    """Upload timeliness of one's own hospital."""
    READ_ALL_TIMELINESS = "stats.timeliness_all"
    PROPOSE_RESEARCH = "research.propose"
    """Propose a de-identified research project and see its cohort counts."""
    APPROVE_RESEARCH = "research.approve"
    EXPORT_RESEARCH = "research.export"
    SHARE_STUDY = "portal.share"
    """Give a doctor outside the platform a view-only link to one's own study."""
    LINK_FAMILY = "portal.family"
    """Add a family member to act for, with that person's proof (portal, issue 13)."""
    SET_RESEARCH_CHOICE = "research.own_choice"
    """Refuse (or allow again) research use of one's own data."""
    READ_HEALTH = "system.health"
    """Health details and the Prometheus metrics."""
    MAINTAIN_ARCHIVE = "archive.maintain"
    MANAGE_PATIENT_INDEX = "patient_index.manage"
    """Read, link, unlink, merge the patient index; register patients for any hospital."""
    REGISTER_PATIENTS = "patient_index.register"
    """A registration feed: register patients of the actor's own hospital."""
    ISSUE_ACTIVATION_CODES = "account.activation_code"
    """Hand residents of the actor's own hospital an activation code (any hospital's with
    ``MANAGE_ACCOUNTS``)."""
    REVIEW_ALL_GRANTS = "grant.review_all"
    """Review every hospital's in-person and break-glass grants; revoke any grant."""
    SEND_HEARTBEAT = "gateway.heartbeat"
    """A hospital's edge gateway reports its queue (for the actor's own hospital)."""
    READ_GATEWAYS = "gateway.read"
    CHECK_RECOGNITION = "recognition.check"
    """Check an order for mutual recognition, record the decision, see the figures (the
    actor's own hospital)."""
    MANAGE_RECOGNITION_RULES = "recognition.manage"
    """Change the recognition rules, code maps and prices; act for any hospital."""
    LAUNCH_WORKSTATION = "workstation.launch"
    """A hospital's HIS mints a single-use launch of the workstation for one of its own
    doctors and patients (IHE Invoke Image Display style)."""
    READ_DASHBOARD = "stats.dashboard"
    """The commission's dashboard, for the actor's scope: its area (a health bureau) or its
    own hospital with the province's averages (a hospital administrator)."""
    READ_PROVINCE_STATS = "stats.province"
    """The dashboard for the whole province (every hospital)."""
    MANAGE_RETENTION = "storage.retention"
    """Retention rules, the review list and the two steps of a deletion (issue 16)."""
    LEGAL_HOLD = "storage.legal_hold"
    """Place and release legal holds on studies and patients."""
    RECONCILE = "archive.reconcile"
    """See and settle the reconciliation queue of the actor's own hospital (objects held
    without PatientID or under another hospital's study UID)."""
    RECONCILE_ANY = "archive.reconcile_any"
    """See and settle every hospital's reconciliation queue."""
    MANAGE_AI = "ai.manage"
    """Register, approve and suspend AI algorithms; enable them for any hospital."""
    ENABLE_AI = "ai.enable"
    """Enable or disable an approved AI algorithm for the actor's own hospital."""
    PERFORM_AI_WORK = "ai.work"
    """Query, claim and complete the UPS workitems made for the actor's algorithm."""
    CONFIRM_AI_RESULT = "ai.confirm"
    """Confirm (or reject) an AI result of a study one may read, as its doctor."""


_EVERYTHING = frozenset(Permission)

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OPERATOR: _EVERYTHING,
    # Administrators do not upload (a study belongs to the hospital that made it) and
    # decide no patient's grants.
    Role.ADMIN: _EVERYTHING - {Permission.DECIDE_GRANT, Permission.READ_OWN_ACCESS_LOG,
                               Permission.SET_RESEARCH_CHOICE, Permission.SHARE_STUDY,
                               Permission.LINK_FAMILY, Permission.STORE,
                               Permission.STORE_FOR_ANY_HOSPITAL,
                               Permission.PERFORM_AI_WORK, Permission.CONFIRM_AI_RESULT},
    Role.HOSPITAL_SYSTEM: frozenset({
        Permission.READ_STUDY, Permission.READ_REPORT, Permission.STORE,
        Permission.READ_TIMELINESS, Permission.REGISTER_PATIENTS,
        Permission.ISSUE_ACTIVATION_CODES, Permission.SEND_HEARTBEAT,
        Permission.CHECK_RECOGNITION, Permission.LAUNCH_WORKSTATION,
        Permission.RECONCILE}),
    Role.DOCTOR: frozenset({
        Permission.READ_STUDY, Permission.READ_REPORT, Permission.REQUEST_GRANT,
        Permission.READ_TIMELINESS, Permission.CHECK_RECOGNITION,
        Permission.PROPOSE_RESEARCH, Permission.CONFIRM_AI_RESULT}),
    Role.HOSPITAL_ADMIN: frozenset({
        Permission.MANAGE_HOSPITAL_ACCOUNTS, Permission.RESET_REGISTRATION,
        Permission.REVIEW_GRANTS, Permission.READ_TIMELINESS,
        Permission.ISSUE_ACTIVATION_CODES, Permission.READ_DASHBOARD,
        Permission.RECONCILE, Permission.ENABLE_AI}),
    Role.RESIDENT: frozenset({
        Permission.READ_STUDY, Permission.READ_REPORT, Permission.DECIDE_GRANT,
        Permission.READ_OWN_ACCESS_LOG, Permission.SET_RESEARCH_CHOICE,
        Permission.SHARE_STUDY, Permission.LINK_FAMILY}),
    Role.SHARE_VIEWER: frozenset({Permission.READ_STUDY, Permission.READ_REPORT}),
    Role.HEALTH_BUREAU: frozenset({Permission.READ_DASHBOARD}),
    # Reads images only (never reports), and only through its workitems (policy.decide).
    Role.AI_ALGORITHM: frozenset({Permission.READ_STUDY, Permission.PERFORM_AI_WORK}),
}
"""The one map from roles to permissions."""

_KIND_ROLES: dict[str, frozenset[Role]] = {
    "operator": frozenset({Role.OPERATOR}),
    "admin": frozenset({Role.ADMIN}),
    "hospital": frozenset({Role.HOSPITAL_SYSTEM}),
    "doctor": frozenset({Role.DOCTOR}),
    "resident": frozenset({Role.RESIDENT}),
    "bureau": frozenset({Role.HEALTH_BUREAU}),
    "algorithm": frozenset({Role.AI_ALGORITHM}),
}


@dataclass(frozen=True, slots=True)
class Actor:
    """A caller, as established by a door's authentication.

    ``kind`` says how the caller authenticated and what the audit trail calls it:
    ``operator`` (unauthenticated loopback in open local mode), ``hospital`` (API credential
    or AE title), ``doctor`` and ``resident`` (signed-in people), ``admin`` (platform
    administrator). ``roles`` say what it may do; left empty they follow from ``kind``
    (``Actor(kind="doctor", ...)`` is a doctor), and a hospital administrator is
    ``Actor(kind="doctor", roles={Role.DOCTOR, Role.HOSPITAL_ADMIN}, ...)``. An unknown
    kind has no role and may do nothing.
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
    roles: frozenset[Role] = field(default_factory=frozenset)
    shared_study_uid: str = ""
    """For a share viewer: the one study its link names (the policy's scope)."""
    area: str = ""
    """For a health bureau: ``<city>`` or ``<city>/<county>`` of the hospital registry."""
    algorithm_id: str = ""
    """For an AI algorithm: its public id (the policy admits the studies of the UPS
    workitems it holds in progress)."""

    def __post_init__(self) -> None:
        if not self.roles:
            object.__setattr__(self, "roles", _KIND_ROLES.get(self.kind, frozenset()))

    @property
    def permissions(self) -> frozenset[Permission]:
        return frozenset().union(*(ROLE_PERMISSIONS[r] for r in self.roles))

    def can(self, permission: Permission) -> bool:
        """Whether one of the actor's roles grants ``permission`` (no data rule applied)."""
        return any(permission in ROLE_PERMISSIONS[r] for r in self.roles)

    def has(self, role: Role) -> bool:
        return role in self.roles


LOCAL_OPERATOR = Actor(kind="operator", subject="local", display="local operator")
