"""The services every door shares, built once by the composition root (``cloudfilm.app``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cloudfilm.services.access.accounts import AccountService
from cloudfilm.services.access.audit import AuditService
from cloudfilm.services.access.consent import ConsentService
from cloudfilm.services.access.launch import LaunchService
from cloudfilm.services.access.policy import AccessPolicy
from cloudfilm.services.access.sms import SmsService
from cloudfilm.services.access.workstation import WorkstationService
from cloudfilm.services.ai.service import AiService
from cloudfilm.services.archive.ingest import IngestService
from cloudfilm.services.archive.maintenance import MaintenanceService
from cloudfilm.services.archive.query import QueryService
from cloudfilm.services.archive.reconcile import ReconciliationService
from cloudfilm.services.archive.retrieve import RetrieveService
from cloudfilm.services.health import FiguresService, HealthService
from cloudfilm.services.identity.credentials import CredentialService
from cloudfilm.services.identity.hospitals import HospitalService
from cloudfilm.services.identity.mpi import ResidentService
from cloudfilm.services.lifecycle.service import LifecycleService
from cloudfilm.services.network.gateways import GatewayService
from cloudfilm.services.network.peers import PeerService
from cloudfilm.services.portal.downloads import DownloadService
from cloudfilm.services.portal.family import FamilyService
from cloudfilm.services.portal.sharing import PreferenceService, ShareService
from cloudfilm.services.portal.timeline import TimelineService
from cloudfilm.services.portal.viewing import ViewingService
from cloudfilm.services.recognition.service import RecognitionService
from cloudfilm.services.reports.service import ReportService
from cloudfilm.services.research.service import ResearchService
from cloudfilm.services.stats.figures import StatsService
from cloudfilm.services.storage.service import StorageService


@dataclass(frozen=True, slots=True)
class Limits:
    max_upload_bytes: int
    max_query_results: int


@dataclass(frozen=True, slots=True)
class WebAccess:
    """Which HTTP requests the doors take at all (``http.*`` settings): allowed Host names
    (exact, ``*.suffix`` or ``*``), extra trusted origins for state-changing requests,
    reverse proxies whose X-Forwarded-* headers are believed and /metrics scrapers
    (addresses or CIDRs)."""

    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
    trusted_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    metrics_clients: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LocalAccess:
    """Who may call the HTTP API without credentials (``security.local_mode``): when
    ``open``, clients whose TCP peer address is in ``clients`` act as the local operator."""

    open: bool
    clients: frozenset[str]


@dataclass(frozen=True, slots=True)
class Services:
    ingest: IngestService
    query: QueryService
    retrieve: RetrieveService
    health: HealthService
    maintenance: MaintenanceService
    peers: PeerService
    hospitals: HospitalService
    credentials: CredentialService
    residents: ResidentService
    # Accounts and sessions, text messages, authorisation grants (issue 5 part B).
    accounts: AccountService
    sms: SmsService
    consent: ConsentService
    # Diagnostic reports (issue 6): FHIR/HL7 intake, reading, rendering, search, timeliness.
    reports: ReportService
    # Exam mutual recognition (issue 15): rules, the check, decisions, savings.
    recognition: RecognitionService
    limits: Limits
    # Where doors spool incoming objects before ingest (same filesystem as local blobs,
    # so that a stored object is renamed into place, not copied).
    spool_dir: Path
    policy: AccessPolicy
    audit: AuditService
    local_access: LocalAccess
    # Heartbeats of the hospitals' edge gateways (issue 18).
    gateways: GatewayService
    # The resident portal's timeline (issue 13).
    timeline: TimelineService
    # De-identified research projects (issue 19).
    research: ResearchService
    # Studies and images a resident takes home (issue 13).
    downloads: DownloadService
    # View-only links to one study for a doctor outside the platform (issue 13).
    shares: ShareService
    preferences: PreferenceService
    # The doctor's workstation: patient look-up and view, HIS launches (issue 14).
    workstation: WorkstationService
    launches: LaunchService
    # The phone viewer: one decision per series viewing, then cheap frames (issue 13).
    viewings: ViewingService
    # Family links a resident adds from the portal, proven by the other person (issue 13).
    family: FamilyService
    # Background re-encoding and the integrity scrubber (issue 16).
    storage: StorageService | None = None
    web: WebAccess = WebAccess()
    # The commission's dashboard (issue 17): rollups, figures, alerts.
    stats: StatsService | None = None
    # Retention rules, review list, two-step deletion, legal holds (issue 16).
    lifecycle: LifecycleService | None = None
    # Objects held without PatientID or under another hospital's study UID (issue 12).
    reconcile: ReconciliationService | None = None
    # Index-wide figures for /metrics (issue 12).
    figures: FiguresService | None = None
    # AI assistance: algorithms, the UPS worklist, results (issue 19).
    ai: AiService | None = None
