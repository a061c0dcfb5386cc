"""Composition root: build the engine, the blob store and the services once, hand them out.

FastAPI (``app.state.services``) and the DIMSE listener get the same :class:`Services`.
Library-wide settings of pydicom/pynetdicom are made here once, never per request.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import signal
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog
from pydantic import SecretStr

from cloudfilm.config import ConfigError, SecuritySettings, Settings
from cloudfilm.infrastructure.db import migrate
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.infrastructure.dicom.lossless import CompressionPolicy
from cloudfilm.infrastructure.storage.base import BlobStore
from cloudfilm.infrastructure.storage.factory import open_blob_store
from cloudfilm.infrastructure.storage.frame_cache import DiskFrameCache
from cloudfilm.infrastructure.storage.mirror import MirroredBlobStore
from cloudfilm.infrastructure.storage.tiered import TieredBlobStore
from cloudfilm.services.access.accounts import AccessPolicySettings, AccountService
from cloudfilm.services.access.audit import AuditService
from cloudfilm.services.access.consent import ConsentService, GrantSettings
from cloudfilm.services.access.launch import LaunchService
from cloudfilm.services.access.otp import OneTimeCodes, RateLimiter
from cloudfilm.services.access.policy import AccessPolicy
from cloudfilm.services.access.proofing import (
    IdentityVerifier,
    LocalIdentityVerifier,
    ProviderVerifier,
)
from cloudfilm.services.access.sms import OutboxSmsSender, SmsSender, SmsService, Templates
from cloudfilm.services.access.workstation import WorkstationService
from cloudfilm.services.ai.registry import AlgorithmRegistry
from cloudfilm.services.ai.results import AiResults
from cloudfilm.services.ai.service import AiService
from cloudfilm.services.ai.subscriptions import UpsEvents
from cloudfilm.services.ai.worklist import AiWork
from cloudfilm.services.archive.ingest import IngestService
from cloudfilm.services.archive.maintenance import MaintenanceService
from cloudfilm.services.archive.query import QueryService
from cloudfilm.services.archive.reconcile import ReconciliationService
from cloudfilm.services.archive.retrieve import RetrieveService
from cloudfilm.services.container import Limits, LocalAccess, Services, WebAccess
from cloudfilm.services.health import FiguresService, HealthService
from cloudfilm.services.identity.credentials import CredentialCache, CredentialService
from cloudfilm.services.identity.hospitals import HospitalService
from cloudfilm.services.identity.mpi import ResidentService
from cloudfilm.services.identity.protection import (
    IdProtector,
    InvalidKeyError,
    decode_key,
    new_key,
)
from cloudfilm.services.lifecycle.rules import Rule
from cloudfilm.services.lifecycle.service import LifecycleService
from cloudfilm.services.network.gateways import GatewayService
from cloudfilm.services.network.peers import PeerService
from cloudfilm.services.portal.downloads import DownloadService
from cloudfilm.services.portal.family import FamilyService
from cloudfilm.services.portal.sharing import PreferenceService, ShareService
from cloudfilm.services.portal.timeline import TimelineService
from cloudfilm.services.portal.viewing import ViewingService
from cloudfilm.services.recognition.service import RecognitionService
from cloudfilm.services.reports.intake import ReportIntake
from cloudfilm.services.reports.service import ReportService, ReportSettings
from cloudfilm.services.research.service import ResearchService
from cloudfilm.services.stats.figures import StatsService
from cloudfilm.services.storage.service import StorageService
from cloudfilm.services.storage.tiers import TierPolicy, Tiers

if TYPE_CHECKING:
    # The doors are imported where they are built: CLI commands that only need the services
    # then skip FastAPI and pynetdicom (issue 12, fast start).
    from fastapi import FastAPI

    from cloudfilm.interfaces.dimse.server import DimseServer
    from cloudfilm.interfaces.web.pages import WebOptions


def configure_logging(*, json: bool = False, level: int = logging.INFO) -> None:
    """structlog over stdlib logging: JSON lines in production, readable lines locally."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer = (structlog.processors.JSONRenderer() if json
                else structlog.dev.ConsoleRenderer(colors=False))
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=shared,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )


def configure_dicom_libraries() -> None:
    """Process-wide pydicom/pynetdicom settings, set once at start-up."""
    import pydicom.config

    # Read what hospitals send even when slightly off-standard; we validate ourselves.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE

    from pynetdicom import _config as pynetdicom_config

    # C-STORE data sets are written to a temp file as P-DATA arrives, not assembled in
    # memory, so a 2 GB multiframe object costs one PDU of RAM per association.
    pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
    # send_c_store(path) sends the file's bytes as stored, not decoded and re-encoded
    # (C-MOVE/C-GET sub-operations, interfaces/dimse/sending.py).
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    # pynetdicom's standard handlers log every message and identifier (patient names);
    # our handlers log events without personal data (STYLE.md 6).
    pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False
    # pynetdicom logs at INFO every sub-operation of a C-MOVE/C-GET and every association
    # (~5 % of a retrieve's CPU, measured); our handlers log what matters.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def build_services(settings: Settings) -> Services:
    data_dir = settings.data_dir.resolve()
    try:
        _private_folder(data_dir)
    except OSError as exc:
        raise ConfigError(f"CLOUDFILM_DATA_DIR: cannot use {data_dir} as the data folder: "
                          f"{exc.strerror or exc}") from exc
    if settings.database_url is None:
        _private_file(data_dir / "index.sqlite3")
    db = open_index(settings, upgrade=settings.auto_migrate)
    blobs = _open_blobs(settings, data_dir)
    if settings.storage.replica_url:
        blobs = MirroredBlobStore(blobs, open_blob_store(settings.storage.replica_url,
                                                         data_dir=data_dir))
    if settings.storage.cold_url:  # new blobs go hot; readers find either tier
        blobs = TieredBlobStore(blobs, open_blob_store(settings.storage.cold_url,
                                                       data_dir=data_dir))
    spool = _spool_dir(settings, data_dir)
    storage = _storage_service(settings, db, blobs, spool)
    security = resolve_secrets(settings, data_dir)
    protector = _protector(security)
    peers = PeerService(db)
    local = local_access(settings)
    audit = AuditService(db, address_key=_address_key(security))
    policy = AccessPolicy(audit=audit)
    sms = SmsService(_sms_sender(settings, db, protector), db, protector, Templates(
        sign_name=settings.sms.sign_name, code=settings.sms.template_code,
        grant_request=settings.sms.template_grant_request,
        grant_notice=settings.sms.template_grant_notice, portal_link=settings.sms.portal_link))
    access = settings.access
    codes = OneTimeCodes(protector, ttl_seconds=access.otp_ttl_seconds,
                         max_attempts=access.otp_max_attempts)
    limiter = RateLimiter()
    accounts = AccountService(db, protector, sms, codes, limiter, AccessPolicySettings(
        session_hours=access.session_hours,
        otp_sends_per_phone_hour=access.otp_sends_per_phone_hour,
        otp_sends_per_requester_hour=access.otp_sends_per_requester_hour,
        otp_checks_per_15min=access.otp_checks_per_15min,
        lockout_failures=access.lockout_failures,
        lockout_window_minutes=access.lockout_window_minutes,
        signin_max_delay_seconds=access.signin_max_delay_seconds,
        signin_failures_per_source=access.signin_failures_per_source,
        activation_code_days=access.activation_code_days), audit=audit,
        verifier=_identity_verifier(settings))
    consent = ConsentService(db, protector, sms, codes, limiter, GrantSettings(
        default_grant_hours=min(access.default_grant_hours, access.max_grant_hours),
        max_grant_hours=access.max_grant_hours,
        in_person_grant_hours=min(access.in_person_grant_hours, access.max_grant_hours),
        break_glass_hours=min(access.break_glass_hours, access.max_grant_hours),
        otp_sends_per_phone_hour=access.otp_sends_per_phone_hour,
        otp_sends_per_requester_hour=access.otp_sends_per_requester_hour,
        otp_checks_per_15min=access.otp_checks_per_15min), audit=audit)
    zone = ZoneInfo(settings.reports.timezone)
    # Background work ingest hands over in its transaction (storage jobs, AI studies);
    # bound after the services that receive it are built.
    outbox: list[Callable[[Any, list[str]], None]] = [storage.enqueue_in]

    def enqueue(session: Any, uids: list[str]) -> None:
        for hook in outbox:
            hook(session, uids)

    ingest = IngestService(db, blobs, spool, protector=protector, audit=audit, zone=zone,
                           reports=ReportIntake(zone), enqueue=enqueue)
    reports = ReportService(db, blobs, policy, audit, ReportSettings(
        zone=zone, deadline_hours=settings.reports.upload_deadline_hours,
        max_bytes=settings.reports.max_report_bytes), work_dir=spool,
        sender_for=ingest.sender_for)
    retrieve = RetrieveService(db, blobs, policy, audit, frame_cache=(
        DiskFrameCache(data_dir / "cache" / "rendered") if settings.web.frame_cache else None))
    timeline = TimelineService(db, policy, audit)
    registry = AlgorithmRegistry(db, audit, plugins=settings.ai.plugins, protector=protector)
    work = AiWork(db, audit, policy, registry, retrieve, ingest, spool / "ai", blobs=blobs,
                  protector=protector, settle_seconds=settings.ai.settle_seconds)
    ai = AiService(registry, work, AiResults(db, policy, retrieve), UpsEvents(db, work))
    outbox.append(ai.work.enqueue_in)
    verified = CredentialCache(security.credential_cache_seconds)
    return Services(
        ingest=ingest,
        reports=reports,
        recognition=RecognitionService(db, protector, audit, zone=zone,
                                       settle_minutes=settings.recognition.settle_minutes),
        query=QueryService(db, policy, audit),
        retrieve=retrieve,
        health=HealthService(db, blobs),
        maintenance=MaintenanceService(db, blobs),
        peers=peers,
        hospitals=HospitalService(db, peers, credentials_changed=verified.forget_all),
        credentials=CredentialService(
            db, security.admin_token.get_secret_value() if security.admin_token else None,
            cache=verified),
        residents=ResidentService(db, protector, audit=audit),
        accounts=accounts,
        sms=sms,
        consent=consent,
        limits=Limits(max_upload_bytes=settings.http.max_upload_bytes,
                      max_query_results=settings.http.max_query_results),
        spool_dir=spool,
        policy=policy,
        audit=audit,
        local_access=local,
        gateways=GatewayService(db),
        web=web_access(settings),
        research=ResearchService(db, blobs, audit, protector,
                                 k=settings.research.k_threshold),
        timeline=timeline,
        downloads=DownloadService(retrieve),
        shares=ShareService(db, audit, timeline),
        preferences=PreferenceService(db),
        workstation=WorkstationService(db, protector, policy, audit, limiter),
        launches=LaunchService(db, protector, audit, accounts),
        viewings=ViewingService(retrieve, protector),
        family=FamilyService(db, protector, sms, codes, limiter, audit),
        storage=storage,
        stats=_stats_service(settings, db, audit, sms),
        lifecycle=LifecycleService(db, blobs, policy, audit, default=Rule(
            "default", settings.storage.retention_years,
            minor_age=settings.storage.retention_minor_age or None,
            minor_years=settings.storage.retention_minor_years)),
        reconcile=ReconciliationService(db, blobs, ingest, spool, audit=audit,
                                        protector=protector),
        figures=FiguresService(db),
        ai=ai,
    )


def _stats_service(settings: Settings, db: Database, audit: AuditService,
                   sms: SmsService) -> StatsService:
    from cloudfilm.infrastructure.webhook import post_json
    from cloudfilm.services.stats.alerts import AlertSender
    from cloudfilm.services.stats.rollup import RollupOptions, StatsRollup

    conf = settings.stats
    notify = AlertSender(db, post=post_json if conf.alert_webhooks else None,
                         sms=sms if conf.alert_sms else None)
    rollup = StatsRollup(db, RollupOptions(
        zone=settings.reports.timezone, deadline_hours=settings.reports.upload_deadline_hours,
        settle_days=conf.settle_days, connected_days=conf.connected_days,
        silent_days=conf.silent_days, late_alert_share=conf.late_alert_share,
        late_alert_min_studies=conf.late_alert_min_studies), notify=notify)
    return StatsService(db, rollup, audit)


def _storage_service(settings: Settings, db: Database, blobs: BlobStore,
                     work_dir: Path) -> StorageService:
    conf = settings.storage
    tiers = Tiers(db, blobs, work_dir, TierPolicy(
        after_days=conf.tier_after_days, unread_days=conf.tier_unread_days,
        per_modality={k.upper(): v for k, v in conf.tier_after_days_modalities.items()},
        batch=conf.tier_batch)) if isinstance(blobs, TieredBlobStore) else None
    return StorageService(db, blobs, work_dir, policy=CompressionPolicy(
        enabled=conf.compress, default=conf.compress_default,
        per_modality={k.upper(): v for k, v in conf.compress_modalities.items()},
        per_hospital=dict(conf.compress_hospitals)),
        max_attempts=settings.jobs.max_attempts, stale_seconds=settings.jobs.stale_seconds,
        delete_grace_seconds=conf.delete_grace_seconds, tiers=tiers,
        batch=settings.jobs.batch)


_LOCAL_HOST_NAMES = ("localhost", "127.0.0.1", "::1")


def web_access(settings: Settings) -> WebAccess:
    """What the HTTP doors accept: localhost names, the configured listen host and
    ``http.allowed_hosts``; proxies, origins and scrapers only as configured."""
    http = settings.http
    hosts = list(_LOCAL_HOST_NAMES)
    if http.host not in ("0.0.0.0", "::", ""):
        hosts.append(http.host)
    hosts.extend(h.strip().lower() for h in http.allowed_hosts if h.strip())
    return WebAccess(allowed_hosts=tuple(dict.fromkeys(hosts)),
                     trusted_origins=tuple(o.strip().rstrip("/").lower()
                                           for o in http.trusted_origins if o.strip()),
                     trusted_proxies=tuple(http.trusted_proxies),
                     metrics_clients=tuple(http.metrics_clients))


def open_index(settings: Settings, *, upgrade: bool) -> Database:
    """Create the data folder, migrate the index when ``upgrade``, and open it.

    What an operator can fix (a bad URL, an unreachable server, a data folder that is a
    file) raises :class:`ConfigError`: one line at the command line, not a traceback.
    """
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    url = settings.effective_database_url
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError as exc:
        raise ConfigError(f"CLOUDFILM_DATABASE_URL: not a database URL: {exc}") from exc
    data_dir = settings.data_dir.resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"CLOUDFILM_DATA_DIR: cannot use {data_dir} as the data folder: "
                          f"{exc.strerror or exc}") from exc
    try:
        if upgrade:
            migrate.upgrade(url)
        return Database(url)
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError) as exc:
        raise ConfigError(f"CLOUDFILM_DATABASE_URL: unsupported database URL {shown}: "
                          f"{exc}") from exc
    except sqlalchemy.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise ConfigError(f"cannot open the index database {shown}: {reason}") from exc


def _open_blobs(settings: Settings, data_dir: Path) -> BlobStore:
    try:
        return open_blob_store(settings.effective_storage_url, data_dir=data_dir)
    except ValueError as exc:  # the factory's message names the setting and accepted forms
        raise ConfigError(str(exc)) from exc


def local_access(settings: Settings) -> LocalAccess:
    """Whether unauthenticated loopback requests act as the local operator.

    Unset ``security.local_mode``: open for the embedded SQLite platform (one machine, one
    operator), closed with a server database, which several machines share.

    Raises
    ------
    ConfigError
        ``local_mode="open"`` with a server database and no explicit
        ``security.allow_open_local_mode``.
    """
    security = settings.security
    sqlite = settings.effective_database_url.startswith("sqlite")
    mode = security.local_mode or ("open" if sqlite else "closed")
    if mode == "open" and not sqlite and not security.allow_open_local_mode:
        raise ConfigError(
            "CLOUDFILM_SECURITY__LOCAL_MODE=open lets unauthenticated local requests read "
            "every study; with a server database it is refused unless "
            "CLOUDFILM_SECURITY__ALLOW_OPEN_LOCAL_MODE=true (a one-machine installation)")
    return LocalAccess(open=mode == "open", clients=frozenset(security.local_clients))


def _address_key(security: SecuritySettings) -> bytes:
    # Derived from the national-ID HMAC key (no new secret to back up): a keyed hash, so
    # that the 2^32 IPv4 addresses cannot be tried against the trail without the key.
    assert security.national_id_hmac_key is not None
    secret = security.national_id_hmac_key.get_secret_value().encode()
    return hashlib.sha256(b"cloudfilm-client-address-v1\0" + secret).digest()


_SECRET_NAMES = ("national_id_key", "national_id_hmac_key", "admin_token")


def resolve_secrets(settings: Settings, data_dir: Path) -> SecuritySettings:
    """The configured secrets; for the embedded platform, missing ones come from
    ``<data_dir>/secrets.toml``, generated (random, mode 0600) on first start and reused.

    A PostgreSQL deployment runs several processes on several machines that must share the
    keys, so there a missing key is a configuration error, never a generated default.

    Raises
    ------
    ConfigError
        A key is missing (PostgreSQL) or malformed; the message names the setting.
    """
    configured = settings.security
    missing = [n for n in _SECRET_NAMES if getattr(configured, n) is None]
    if missing and not settings.effective_database_url.startswith("sqlite"):
        raise ConfigError("missing secrets: " + ", ".join(
            f"CLOUDFILM_SECURITY__{n.upper()}" for n in missing)
            + " (a PostgreSQL deployment must configure them; generate each with "
            "`python -c 'import base64,os;print(base64.urlsafe_b64encode(os.urandom(32))"
            ".decode())'`)")
    if not missing:
        return configured
    stored = _secrets_file(data_dir / "secrets.toml")
    return configured.model_copy(update={n: SecretStr(stored[n]) for n in missing})


def _secrets_file(path: Path) -> dict[str, str]:
    if path.exists():
        try:
            with open(path, "rb") as fh:
                values = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read the generated secrets {path}: {exc}") from exc
        if all(isinstance(values.get(n), str) for n in _SECRET_NAMES):
            return {n: values[n] for n in _SECRET_NAMES}
        raise ConfigError(f"{path} lacks one of {', '.join(_SECRET_NAMES)}; restore it from "
                          "a backup (encrypted national IDs cannot be read without it)")
    values = {n: new_key() for n in _SECRET_NAMES}
    body = "# generated by cloudfilm on first start; back it up with the index\n" + "".join(
        f'{n} = "{v}"\n' for n, v in values.items())
    # O_EXCL: two processes starting together cannot overwrite each other's keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _secrets_file(path)
    with os.fdopen(fd, "w") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    return values


def _protector(security: SecuritySettings) -> IdProtector:
    assert security.national_id_key is not None and security.national_id_hmac_key is not None
    try:
        return IdProtector(
            decode_key(security.national_id_key.get_secret_value(),
                       name="CLOUDFILM_SECURITY__NATIONAL_ID_KEY", min_bytes=32, exact=True),
            decode_key(security.national_id_hmac_key.get_secret_value(),
                       name="CLOUDFILM_SECURITY__NATIONAL_ID_HMAC_KEY", min_bytes=32),
        )
    except InvalidKeyError as exc:
        raise ConfigError(str(exc)) from exc


def _identity_verifier(settings: Settings) -> IdentityVerifier | None:
    """The configured real-name provider for resident registration, or None."""
    proofing = settings.proofing
    if proofing.provider == "none":
        return None
    if proofing.provider == "local":
        return LocalIdentityVerifier(proofing.local_pairs)
    from cloudfilm.infrastructure.realname.http import HttpIdentityVerifier

    if not proofing.endpoint or not proofing.access_key or proofing.secret is None:
        raise ConfigError("the http identity provider needs CLOUDFILM_PROOFING__ENDPOINT, "
                          "CLOUDFILM_PROOFING__ACCESS_KEY and CLOUDFILM_PROOFING__SECRET")
    return ProviderVerifier(HttpIdentityVerifier(
        proofing.endpoint, access_key=proofing.access_key,
        secret=proofing.secret.get_secret_value(), timeout=proofing.timeout))


def _sms_sender(settings: Settings, db: Database, protector: IdProtector) -> SmsSender:
    """The configured SMS backend: the local outbox (default) or a provider's HTTP API."""
    sms = settings.sms
    if sms.backend == "outbox":
        if not settings.effective_database_url.startswith("sqlite"):
            # Allowed (staging, demos), but nothing reaches anyone's phone.
            logging.getLogger(__name__).warning("cloudfilm.sms.outbox_only")
        return OutboxSmsSender(db, protector)
    from cloudfilm.infrastructure.sms.http import HttpSmsSender

    if not sms.endpoint or not sms.access_key or sms.secret is None:
        raise ConfigError("the http SMS backend needs CLOUDFILM_SMS__ENDPOINT, "
                          "CLOUDFILM_SMS__ACCESS_KEY and CLOUDFILM_SMS__SECRET")
    return HttpSmsSender(sms.endpoint, access_key=sms.access_key,
                         secret=sms.secret.get_secret_value(), sign_name=sms.sign_name,
                         timeout=sms.timeout)


def _private_folder(path: Path) -> None:
    """Create the data folder 0700 (it holds the index, the generated secrets and the
    blobs); an existing one of ours loses its group and world access."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _drop_group_and_world(path)


def _private_file(path: Path) -> None:
    """Create the embedded index 0600 before SQLite does (SQLite creates it 0644 under the
    usual umask and gives its -wal and -shm files the same mode)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        for part in (path, path.with_name(path.name + "-wal"),
                     path.with_name(path.name + "-shm")):
            if part.exists():
                _drop_group_and_world(part)


def _drop_group_and_world(path: Path) -> None:
    info = path.stat()
    if info.st_uid == os.getuid() and info.st_mode & 0o077:
        path.chmod(info.st_mode & 0o700)


def _spool_dir(settings: Settings, data_dir: Path) -> Path:
    # Inside the local blob folder's filesystem when there is one, so ingest renames.
    blob_root = Path(settings.effective_storage_url)
    base = blob_root if blob_root.is_absolute() else data_dir
    spool = base / ".tmp" / "incoming"
    spool.mkdir(parents=True, exist_ok=True)
    return spool


def build_dimse_server(services: Services, settings: Settings) -> DimseServer:
    """The DIMSE listener on the same :class:`Services` as the HTTP app (not started)."""
    from cloudfilm.interfaces.dimse.server import DimseServer, tls_context

    dimse = settings.dimse
    context = None
    if dimse.tls_certificate is not None or dimse.tls_private_key is not None:
        if dimse.tls_certificate is None or dimse.tls_private_key is None:
            raise ConfigError("DICOM TLS needs both CLOUDFILM_DIMSE__TLS_CERTIFICATE and "
                              "CLOUDFILM_DIMSE__TLS_PRIVATE_KEY")
        context = tls_context(dimse.tls_certificate, dimse.tls_private_key,
                              dimse.tls_ca_certificates)
    if dimse.require_tls_remote and (context is None or dimse.tls_ca_certificates is None):
        raise ConfigError("CLOUDFILM_DIMSE__REQUIRE_TLS_REMOTE needs mutual TLS: set "
                          "CLOUDFILM_DIMSE__TLS_CERTIFICATE, CLOUDFILM_DIMSE__TLS_PRIVATE_KEY "
                          "and CLOUDFILM_DIMSE__TLS_CA_CERTIFICATES (the CA of the peers)")
    return DimseServer(
        services, ae_title=dimse.ae_title, host=dimse.host, port=dimse.port,
        max_pdu=dimse.max_pdu, max_associations=dimse.max_associations,
        timeout=dimse.timeout, ssl_context=context, tls_port=dimse.tls_port,
        require_tls_remote=dimse.require_tls_remote, reuse_port=dimse.processes > 1,
    )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options every HTTP server of ours runs with.

    Proxy headers: uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told otherwise,
    which let anyone on the machine rotate it past per-requester rate limits. The app
    applies ``http.trusted_proxies`` itself (``GuardMiddleware``), so uvicorn's own
    handling is off and its ``forwarded_allow_ips`` names the same list. Request heads
    are bounded (``http.max_header_bytes``) by ``BoundedHttpToolsProtocol``.
    """
    from cloudfilm.interfaces.api.server import BoundedHttpToolsProtocol

    return {"proxy_headers": False,
            "forwarded_allow_ips": ",".join(settings.http.trusted_proxies),
            # A worker imports pydicom, SQLAlchemy and FastAPI before it answers uvicorn's
            # health ping; the default 5 s killed and restarted workers in a loop on a busy
            # 2-core machine (seen in tests/integration/archive/test_serve_workers.py).
            "timeout_worker_healthcheck": settings.http.worker_healthcheck_seconds,
            "http": BoundedHttpToolsProtocol,
            "h11_max_incomplete_event_size": settings.http.max_header_bytes}


def build_http_app(settings: Settings) -> FastAPI:
    from cloudfilm.interfaces.api.http import create_app

    configure_dicom_libraries()
    return create_app(build_services(settings), web=web_options(settings))


def web_options(settings: Settings) -> WebOptions:
    """What the web pages take from the settings."""
    from cloudfilm.interfaces.web.pages import WebOptions

    return WebOptions(hosts=web_access(settings).allowed_hosts, zone=settings.reports.timezone)


def http_app_from_environment() -> FastAPI:
    """Factory for HTTP worker processes (``cloudfilm serve --workers N``): each worker
    builds its own services from the environment the parent prepared (migrations and the
    embedded secrets already done by the parent)."""
    from cloudfilm.config import load_settings

    die_with_parent()
    settings = load_settings()
    configure_logging(json=settings.log_json)
    app = build_http_app(settings)
    warm_dashboard(app.state.services)
    freeze_startup_objects()
    return app


def warm_dashboard(services: Any) -> None:
    """Read today's audit trail for the dashboard in the background now (once per serving
    process), not in the first reader's request."""
    import threading

    stats = getattr(services, "stats", None)
    if stats is None:
        return

    def warm() -> None:
        try:
            stats.warm()
        except Exception:  # the first reader then reads it; never fail the start
            logging.getLogger(__name__).exception("cloudfilm.stats.warm_failed")

    threading.Thread(target=warm, name="stats-warm", daemon=True).start()


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies (``PR_SET_PDEATHSIG``).

    uvicorn's worker processes otherwise outlive a parent killed with SIGKILL, keep the
    listening socket and block the next start on the same port. Elsewhere: no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) != 0:
        logging.getLogger(__name__).warning("cloudfilm.serve.pdeathsig_failed",
                                            extra={"errno": ctypes.get_errno()})
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def freeze_startup_objects() -> None:
    """Exclude start-up objects from garbage collection, and collect less often.

    pydicom's data dictionaries, SQLAlchemy's and FastAPI's structures are hundreds of
    thousands of long-lived objects; without this every full collection walks them, which
    made a 300-instance QIDO search take 8 ms instead of 3 ms (measured here).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
