"""Settings: environment variables (``CLOUDFILM_*``) over an optional TOML file over defaults.

Nested sections use ``__`` in environment names (``CLOUDFILM_HTTP__PORT=8080``). The two
settings operators set most have flat names: ``CLOUDFILM_DATABASE_URL`` and
``CLOUDFILM_STORAGE_URL``. Defaults give the embedded platform: SQLite and a local folder
under ``data_dir``, no services to start.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)


class ConfigError(Exception):
    """A setting is missing or wrong; the message names it and says what is accepted."""


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8042, ge=1, le=65535)
    # HTTP worker processes. One Python process is bound by the GIL; several share the
    # database and blob store (nothing a request needs lives in a process's memory).
    workers: int = Field(1, ge=1, le=64)
    # Seconds a worker may take to answer the supervisor's health ping (at start-up and
    # while serving) before it is killed and replaced. uvicorn's default of 5 s restarted
    # workers in a loop on a busy 2-core machine (imports alone take seconds there), so the
    # port never opened.
    worker_healthcheck_seconds: int = Field(60, ge=1, le=3600)
    # STOW-RS bodies larger than this are refused with 413 before they fill the disk.
    max_upload_bytes: int = Field(8 * 1024**3, ge=1024)
    # QIDO-RS answers at most this many matches per request; clients page with offset.
    max_query_results: int = Field(10_000, ge=1)
    # Host names (Host header) answered besides localhost, 127.0.0.1, ::1 and ``host``;
    # "*.example.org" matches subdomains, "*" any name. Other names get 400, so that a DNS
    # rebinding page cannot reach the local operator's API.
    allowed_hosts: list[str] = []
    # Origins (scheme://host[:port]) whose pages may send state-changing requests besides
    # the server's own; a foreign Origin or Referer on POST/PUT/PATCH/DELETE gets 403.
    trusted_origins: list[str] = []
    # Reverse proxies (IPs or CIDRs) whose X-Forwarded-For/-Proto/-Host are believed; from
    # anyone else these headers are dropped. None by default (uvicorn's own proxy handling
    # is off; its forwarded_allow_ips gets the same list).
    trusted_proxies: list[str] = []
    # Addresses (IPs or CIDRs) that may read /metrics without a credential (a Prometheus
    # scraper); everyone else needs the administrator's or the local operator's access.
    metrics_clients: list[str] = []
    # Request line and headers together; larger requests are refused (431) while the
    # headers are still arriving.
    max_header_bytes: int = Field(64 * 1024, ge=4096, le=16 * 1024 * 1024)

    @field_validator("trusted_proxies", "metrics_clients")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        # Checked here so that a typo is one configuration error at start-up, not a
        # traceback from building the app.
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        return value


class DimseSettings(BaseModel):
    ae_title: str = "CLOUDFILM"
    # Loopback by default, like HTTP; a province deployment sets 0.0.0.0 (or its LAN address).
    host: str = "127.0.0.1"
    port: int = Field(11112, ge=1, le=65535)
    enabled: bool = True
    # Largest P-DATA PDU we accept; 4 MiB keeps a 512x512 CT slice to one PDU while bounding
    # the buffer per association (0 would mean unlimited).
    max_pdu: int = Field(4 * 1024 * 1024, ge=4096)
    # Concurrent associations; more are rejected as "local limit exceeded" (PS3.8 9.3.4).
    max_associations: int = Field(16, ge=1, le=1000)
    # Seconds without traffic before an association is aborted (ARTIM/DIMSE/network).
    timeout: float = Field(60.0, gt=0)
    # DICOM TLS (PS3.15 B.1): set certificate and key to listen with TLS; with a CA file,
    # peers must present a certificate it signed (mutual TLS).
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    tls_ca_certificates: Path | None = None
    # With TLS configured: a second listener port for TLS, so that ``port`` stays plain for
    # tools on this machine (unset: ``port`` itself speaks TLS).
    tls_port: int | None = Field(None, ge=1, le=65535)
    # Callers not on loopback must come over mutual TLS (needs certificate, key and CA);
    # every caller must also call from an address registered for its AE title.
    require_tls_remote: bool = False
    # Listener processes sharing the port(s) with SO_REUSEPORT: the kernel spreads new
    # associations over them, so several associations use several cores (one process is
    # bound by its interpreter lock). The extra processes die with the one that starts them.
    processes: int = Field(1, ge=1, le=64)

    @field_validator("ae_title")
    @classmethod
    def _valid_ae_title(cls, value: str) -> str:
        if not 1 <= len(value.strip()) <= 16 or "\\" in value:
            raise ValueError("an AE title has 1 to 16 characters and no backslash")
        return value.strip()


class SecuritySettings(BaseModel):
    """Secrets, base64 (standard or URL-safe). None has a default value: when unset, the
    embedded platform (SQLite under ``data_dir``) generates random ones once into
    ``<data_dir>/secrets.toml`` (mode 0600) and reuses them; a PostgreSQL deployment must
    set them (``app.resolve_secrets``)."""

    # AES-256-GCM key (32 bytes) that encrypts national ID numbers at rest.
    national_id_key: SecretStr | None = None
    # HMAC-SHA256 key (at least 32 bytes) of the look-up hash of national IDs.
    national_id_hmac_key: SecretStr | None = None
    # Bearer token of the administrators' REST API (/api/v1/hospitals, /api/v1/residents).
    admin_token: SecretStr | None = None
    # HTTP requests without credentials: "open" lets clients listed in ``local_clients``
    # (loopback) act as the local operator, "closed" answers 401. Unset: open for the
    # embedded SQLite platform, closed with a server database (PostgreSQL).
    local_mode: Literal["open", "closed"] | None = None
    # TCP peer addresses that count as local (X-Forwarded-For counts only when it comes
    # from one of http.trusted_proxies).
    local_clients: list[str] = ["127.0.0.1", "::1"]
    # An explicit local_mode="open" with a server database is refused at start-up unless
    # this is true (one machine running PostgreSQL, nobody else on the network).
    allow_open_local_mode: bool = False
    # Seconds a verified hospital credential (cfh_) is trusted without asking the database
    # again. A revocation, rotation or deactivation takes effect at once in the process
    # that made it and within this time in the others (other workers, the CLI); 0 turns
    # the cache off (docs/architecture.md, "Hospital credentials: the verification cache").
    credential_cache_seconds: float = Field(default=5.0, ge=0.0, le=60.0)


class SmsSettings(BaseModel):
    """Text messages (one-time codes, grant notices).

    ``outbox`` (default) keeps messages in the local ``sms_outbox`` table and sends nothing:
    for the embedded platform, demos and tests (``cloudfilm sms outbox`` shows them).
    ``http`` posts each message to an SMS provider's HTTP API (``endpoint``), signing the
    request with ``access_key``/``secret``; the secret has no default.
    """

    backend: Literal["outbox", "http"] = "outbox"
    endpoint: str = ""
    access_key: str = ""
    secret: SecretStr | None = None
    # The registered signature shown before every message ("【云胶片】").
    sign_name: str = "cloudfilm"
    # Provider template ids; the outbox renders the same templates locally.
    template_code: str = "SMS_CODE"
    template_grant_request: str = "SMS_GRANT_REQUEST"
    template_grant_notice: str = "SMS_GRANT_NOTICE"
    timeout: float = Field(10.0, gt=0)
    # The portal's requests page as a short public link, put in "a doctor asks" messages
    # (e.g. "https://y.example.cn/portal/access"); empty: the message names no link.
    portal_link: str = ""


class AccessSettings(BaseModel):
    """Accounts, sessions, one-time codes and authorisation grants."""

    # Grant durations in hours: what a doctor gets by default, the most a resident can
    # authorise, a doctor-assisted in-person consent, and an emergency (break-glass) access.
    default_grant_hours: int = Field(72, ge=1)
    max_grant_hours: int = Field(720, ge=1)
    in_person_grant_hours: int = Field(24, ge=1)
    break_glass_hours: int = Field(4, ge=1)
    # Signed-in sessions (opaque ``cfs_`` tokens) live this long.
    session_hours: int = Field(12, ge=1, le=24 * 30)
    # One-time SMS codes: lifetime, wrong guesses allowed per code.
    otp_ttl_seconds: int = Field(300, ge=30, le=3600)
    otp_max_attempts: int = Field(5, ge=1, le=20)
    # Codes sent per phone and per requester (client address or account) in an hour.
    otp_sends_per_phone_hour: int = Field(5, ge=1)
    otp_sends_per_requester_hour: int = Field(20, ge=1)
    # Code checks (sign-in, grant confirmation) per phone/requester in 15 minutes.
    otp_checks_per_15min: int = Field(10, ge=1)
    # Password sign-in: after this many failures of one user name within the window, each
    # further try waits twice as long as the last, up to signin_max_delay_seconds (a delay,
    # not a lockout: an attacker cannot keep the real doctor out). A client address with
    # signin_failures_per_source failures in the window is refused.
    lockout_failures: int = Field(5, ge=1)
    lockout_window_minutes: int = Field(15, ge=1)
    signin_max_delay_seconds: int = Field(default=60, ge=1, le=3600)
    signin_failures_per_source: int = Field(default=50, ge=1)
    # Activation codes a hospital hands its patient for registering an account live this long.
    activation_code_days: int = Field(default=30, ge=1, le=365)


class ProofingSettings(BaseModel):
    """Identity verification for resident registration (a second factor, issue 11).

    ``none`` (default): registration needs a phone a hospital recorded for the resident or
    an activation code from a hospital. ``http``: also a real-name provider (name, ID number
    and phone belong together), signed like the SMS adapter; the secret has no default.
    ``local``: development only, confirms the ``"<national id>:<phone>"`` pairs listed in
    ``local_pairs``.
    """

    provider: Literal["none", "local", "http"] = "none"
    endpoint: str = ""
    access_key: str = ""
    secret: SecretStr | None = None
    timeout: float = Field(default=10.0, gt=0)
    local_pairs: list[str] = Field(default_factory=list)


class ReportSettings(BaseModel):
    """Diagnostic reports and upload timeliness."""

    # The province's time zone: DICOM dates and times carry none, so exam times (and
    # report times sent without an offset) are read in it.
    timezone: str = "Asia/Shanghai"
    # Studies and reports must reach the platform within this many hours of the exam.
    upload_deadline_hours: int = Field(12, ge=1, le=24 * 30)
    # FHIR and HL7 report bodies larger than this are refused (a PDF inside counts).
    max_report_bytes: int = Field(25 * 1024 * 1024, ge=1024)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as "
                             "Asia/Shanghai)") from exc
        return value


class RecognitionSettings(BaseModel):
    """Exam mutual recognition (检查检验结果互认)."""

    # A study counts as complete once no object has arrived for this long (DICOM has no
    # "study complete" flag without MPPS; the ingest of a study takes minutes at most).
    settle_minutes: int = Field(default=30, ge=0, le=24 * 60)


class WebSettings(BaseModel):
    """The web pages (``/portal``): host names served, cached phone frames."""

    # Host names the pages answer for are the HTTP doors' (http.allowed_hosts).
    # Rendered JPEG frames of the phone viewer are kept under <data_dir>/cache/rendered.
    frame_cache: bool = True


class ResearchSettings(BaseModel):
    """De-identified research projects (issue 19)."""

    # Before a project is approved, cohort counts below k read "< k" (small cells
    # re-identify people).
    k_threshold: int = Field(default=10, ge=1, le=1000)


class AiSettings(BaseModel):
    """AI assistance (issue 19): plug-ins, and when a new study is matched."""

    # A study is matched against the algorithms once it has received no object for this
    # long (a study arrives over many requests; an algorithm should see all of it).
    settle_seconds: float = Field(120.0, ge=0)
    # In-process plug-ins declared here: name -> "module:callable" (the callable takes a
    # series' data sets and returns findings; see infrastructure/ai/plugin.py). Entry
    # points ("entry:<name>", group cloudfilm.ai_plugins) and "builtin:lung-nodules" need
    # no declaration.
    plugins: dict[str, str] = {}
    # `cloudfilm serve` starts the job worker (huey), which schedules workitems and runs
    # in-process plug-ins; otherwise run `cloudfilm jobs worker` or `cloudfilm ai run`.
    background: bool = False


class StorageSettings(BaseModel):
    """Lossless re-encoding, the replica store and the integrity scrubber (issue 16)."""

    # A second blob store every blob is also written to (a folder on another disk, or
    # another bucket; same forms as CLOUDFILM_STORAGE_URL). The scrubber repairs from it.
    replica_url: str = ""
    # Re-encode stored objects losslessly in the background (bit-exact or nothing).
    compress: bool = False
    # Target syntax: JPEG-LS Lossless (1.2.840.10008.1.2.4.80), RLE (1.2.840.10008.1.2.5)
    # or "none"; per modality overrides, e.g. {"US": "none"}.
    compress_default: str = "1.2.840.10008.1.2.4.80"
    compress_modalities: dict[str, str] = {}
    # The same per hospital code (wins over the modality's): {"H042": "none"} or
    # {"H042": "1.2.840.10008.1.2.4.201"} (HTJ2K lossless; colour objects then go JPEG-LS).
    compress_hospitals: dict[str, str] = {}
    # A re-encoded object's original blob is deleted this long after the switch, so that a
    # reader that located it just before (a series being streamed) still finds it.
    delete_grace_seconds: int = Field(900, ge=0)
    # The scrubber job re-reads blobs at most this fast, every scrub_interval_hours.
    scrub_bytes_per_second: int = Field(50 * 1024 * 1024, ge=1024)
    scrub_interval_hours: float = Field(24 * 7, gt=0)
    # The cold tier: a second blob store (folder or s3:// bucket, same forms as
    # CLOUDFILM_STORAGE_URL; "" = one tier). Studies done more than tier_after_days ago and
    # not read for tier_unread_days move there (jobs, verified bit-exact before the hot copy
    # goes); per modality overrides of tier_after_days, e.g. {"MG": 3650}.
    cold_url: str = ""
    tier_after_days: int = Field(365, ge=0)
    tier_unread_days: int = Field(180, ge=0)
    tier_after_days_modalities: dict[str, int] = {}
    tier_interval_hours: float = Field(24, gt=0)
    tier_batch: int = Field(5000, ge=1)
    # Retention (the default rule; rules per modality/hospital/kind are data: `cloudfilm
    # retention rules`): years from the study date, and for a patient younger than
    # retention_minor_age at the study, at least until that age + retention_minor_years.
    retention_years: int = Field(30, ge=1, le=200)
    retention_minor_age: int = Field(18, ge=0, le=150)
    retention_minor_years: int = Field(0, ge=0, le=100)


class JobSettings(BaseModel):
    """The background job queue (huey): SQLite file in the data folder, or Redis."""

    redis_url: str = ""
    # Worker processes started by `cloudfilm serve` (0: none; run `cloudfilm jobs worker`).
    # 2 on the 2-core reference machine: niced, they take only the CPU that ingest and
    # reads leave, and with one a quiet night's backlog drains on one core only
    # (docs/capacity.md, "Keeping up"). More cores: one per core.
    workers: int = Field(2, ge=0, le=64)
    max_attempts: int = Field(3, ge=1, le=100)
    retry_delay_seconds: int = Field(60, ge=0)
    # A queued job without news for this long had its worker die: it is queued again.
    stale_seconds: int = Field(600, ge=1)
    # How often the outbox is handed to the queue.
    relay_seconds: float = Field(5.0, gt=0)
    # Job ids per queue message (huey's SQLite queue costs a transaction per message).
    batch: int = Field(16, ge=1, le=1000)
    # Niceness of the worker processes: re-encoding takes the CPU that ingest and reads
    # leave idle, so a busy ingest is never slowed by it (0: same priority).
    nice: int = Field(10, ge=0, le=19)


class StatsSettings(BaseModel):
    """The commission's dashboard (issue 17): rollup schedule, connection and alerts."""

    # `cloudfilm serve` re-rolls the changed days this often (0: only `cloudfilm stats
    # rollup`, e.g. from cron).
    rollup_minutes: int = Field(15, ge=0, le=24 * 60)
    # A hospital is connected when it uploaded within this many days; silent (an alert)
    # when it has not for `silent_days`.
    connected_days: int = Field(7, ge=1, le=365)
    silent_days: int = Field(3, ge=1, le=365)
    # Alert when more than this share of a day's dated studies of a hospital were late,
    # out of at least `late_alert_min_studies` studies.
    late_alert_share: float = Field(0.2, ge=0.0, le=1.0)
    late_alert_min_studies: int = Field(5, ge=1)
    # Past days are re-rolled for this many days even without new rows: "no report after
    # 72 hours" and grant expiry change with time alone.
    settle_days: int = Field(4, ge=1, le=30)
    # Send alerts to the hospital's contact: its alert_webhook (POST JSON) and, with
    # `alert_sms`, a text to its contact_phone.
    alert_webhooks: bool = True
    alert_sms: bool = False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLOUDFILM_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = Path("cloudfilm-data")
    database_url: str | None = None
    storage_url: str | None = None
    http: HttpSettings = HttpSettings()
    dimse: DimseSettings = DimseSettings()
    security: SecuritySettings = SecuritySettings()
    sms: SmsSettings = SmsSettings()
    access: AccessSettings = AccessSettings()
    proofing: ProofingSettings = ProofingSettings()
    reports: ReportSettings = ReportSettings()
    recognition: RecognitionSettings = RecognitionSettings()
    web: WebSettings = WebSettings()
    research: ResearchSettings = ResearchSettings()
    ai: AiSettings = AiSettings()
    storage: StorageSettings = StorageSettings()
    jobs: JobSettings = JobSettings()
    stats: StatsSettings = StatsSettings()
    log_json: bool = False
    # Embedded default: migrate at start-up. Production runs `cloudfilm db upgrade` itself.
    auto_migrate: bool = True

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = os.environ.get("CLOUDFILM_CONFIG")
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite3').resolve()}"

    @property
    def effective_storage_url(self) -> str:
        if self.storage_url:
            return self.storage_url
        return str((self.data_dir / "blobs").resolve())


def load_settings(**overrides: Any) -> Settings:
    """Load settings once (composition root); turn validation errors into one clear message."""
    toml_file = os.environ.get("CLOUDFILM_CONFIG")
    if toml_file:
        try:
            with open(toml_file, "rb") as fh:
                tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"CLOUDFILM_CONFIG: cannot read {toml_file}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"CLOUDFILM_CONFIG: {toml_file} is not valid TOML: {exc}") from exc
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "CLOUDFILM_" + "__".join(str(p).upper() for p in err["loc"])
            problems.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from exc
    except SettingsError as exc:  # e.g. CLOUDFILM_HTTP='{...' that is not JSON
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError(f"invalid configuration: {exc}{cause}") from exc
