"""The gateway's one TOML file, validated with pydantic; errors are one line each.

Example::

    [cloud]
    url = "https://cloud.example.org"
    credential = "cfh_..."

    [dicom]
    ae_title = "GATEWAY"
    port = 11112
    allowed_ae_titles = ["PACS", "CT1"]

    [queue]
    folder = "/var/lib/cloudfilm-gateway"
    quota_bytes = 50_000_000_000

    [compress]                  # lossless before forwarding (off by default)
    enabled = true
    modalities = { US = "none", MR = "1.2.840.10008.1.2.4.201" }
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator


class GatewayConfigError(Exception):
    """The configuration file is missing, unreadable or wrong; the message says where."""


class _Section(BaseModel):
    # A misspelt key is an error, not a silently ignored default.
    model_config = ConfigDict(extra="forbid")


class CloudConfig(_Section):
    url: str = Field(description="Base URL of the cloud, e.g. https://cloud.example.org")
    credential: SecretStr = Field(description="The hospital's cfh_ credential")
    dicomweb_path: str = "/dicomweb"
    timeout: float = Field(default=60.0, gt=0)
    # Send STOW-RS bodies gzip-compressed (the cloud accepts Content-Encoding: gzip since
    # issue 18's second round; an older cloud refuses them, so it is off by default).
    gzip: bool = False
    # A CA bundle to trust instead of the system's, and a client certificate for mutual TLS.
    ca_file: Path | None = None
    client_certificate: Path | None = None
    client_key: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("credential")
    @classmethod
    def _credential(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("cfh_"):
            raise ValueError("must be the hospital's credential (cfh_...), from "
                             "`cloudfilm hospitals issue-credential CODE` on the cloud")
        return value


class DicomConfig(_Section):
    ae_title: str = "GATEWAY"
    host: str = "0.0.0.0"
    port: int = Field(default=11112, ge=0, le=65535)
    allowed_ae_titles: list[str] = Field(min_length=1)
    max_associations: int = Field(default=8, ge=1, le=200)
    timeout: float = Field(default=60.0, gt=0)

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, value: str) -> str:
        return _ae_title(value)

    @field_validator("allowed_ae_titles")
    @classmethod
    def _allowed(cls, values: list[str]) -> list[str]:
        return [_ae_title(v) for v in values]


def _ae_title(value: str) -> str:
    value = value.strip()
    if not value or len(value) > 16 or not value.isascii() or "\\" in value:
        raise ValueError(f"{value!r} is not an AE title (1-16 ASCII characters, no backslash)")
    return value


class QueueConfig(_Section):
    folder: Path
    quota_bytes: int = Field(default=20 * 1024**3, ge=1024 * 1024)
    # Warn (log, status page, metric) when the queue holds this fraction of the quota.
    warn_fraction: float = Field(default=0.9, gt=0, lt=1)
    # Keep a sent object's file this many days (0: delete once the cloud acknowledged it).
    keep_sent_days: float = Field(default=0.0, ge=0)


class ForwardConfig(_Section):
    batch_size: int = Field(default=20, ge=1, le=1000)
    batch_bytes: int = Field(default=64 * 1024**2, ge=1024)
    concurrency: int = Field(default=4, ge=1, le=64)
    retry_initial_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    # At most this many bytes sent per day (0: no limit), for links billed by volume.
    daily_limit_bytes: int = Field(default=0, ge=0)
    # At most this many bytes per second (0: no limit) during the local hours
    # [throttle_from_hour, throttle_until_hour), e.g. to leave the link to clinical use by day.
    throttle_bytes_per_second: int = Field(default=0, ge=0)
    throttle_from_hour: int = Field(default=0, ge=0, le=23)
    throttle_until_hour: int = Field(default=24, ge=1, le=24)
    # Objects whose exam started longer ago than this and are not yet sent are "at risk".
    deadline_hours: float = Field(default=12.0, gt=0)


# JPEG-LS Lossless, RLE Lossless, HTJ2K Lossless: what the archive's job encodes too.
_LOSSLESS = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.201")


class CompressConfig(_Section):
    """Lossless compression at the gateway, before forwarding (the archive's policy shape:
    a default target syntax and per-modality overrides, "none" = forward as received)."""

    enabled: bool = False
    default: str = _LOSSLESS[0]
    modalities: dict[str, str] = {}
    # Packer processes (niced, so receiving wins the CPU); one per core is the most useful.
    workers: int = Field(default=1, ge=1, le=64)
    nice: int = Field(default=10, ge=0, le=19)
    # An object not compressed this long after it arrived is forwarded as received (the
    # packer is behind): the deadline to the cloud matters more than the bytes.
    max_wait_seconds: float = Field(default=300.0, gt=0)

    @field_validator("default")
    @classmethod
    def _default(cls, value: str) -> str:
        return _target(value)

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, values: dict[str, str]) -> dict[str, str]:
        return {k.strip().upper(): _target(v) for k, v in values.items()}


def _target(value: str) -> str:
    value = value.strip()
    if value.lower() in ("", "none"):
        return "none"
    if value not in _LOSSLESS:
        raise ValueError(f"{value!r} is not a lossless syntax the gateway encodes (JPEG-LS "
                         f"{_LOSSLESS[0]}, RLE {_LOSSLESS[1]}, HTJ2K {_LOSSLESS[2]} or none)")
    return value


class ReportsConfig(_Section):
    # HL7 v2 over MLLP from the RIS; off when no port is set.
    mllp_host: str = "0.0.0.0"
    mllp_port: int | None = Field(default=None, ge=0, le=65535)


class WatchConfig(_Section):
    # A folder where DICOM files are dropped; each is queued, then removed from the folder.
    folder: Path | None = None
    interval_seconds: float = Field(default=2.0, gt=0)


class PullConfig(_Section):
    """Pull mode: poll a PACS that cannot push (C-FIND, then C-MOVE to our AE title)."""

    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    hours: float = Field(default=24.0, gt=0)
    interval_seconds: float = Field(default=300.0, gt=0)
    timeout: float = Field(default=60.0, gt=0)

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, value: str) -> str:
        return _ae_title(value)


class StatusConfig(_Section):
    host: str = "127.0.0.1"
    port: int | None = Field(default=8070, ge=0, le=65535)
    heartbeat_seconds: float = Field(default=60.0, ge=0)


class GatewayConfig(_Section):
    cloud: CloudConfig
    dicom: DicomConfig
    queue: QueueConfig
    forward: ForwardConfig = ForwardConfig()
    compress: CompressConfig = CompressConfig()
    reports: ReportsConfig = ReportsConfig()
    watch: WatchConfig = WatchConfig()
    status: StatusConfig = StatusConfig()
    pull: PullConfig | None = None


def load_config(path: Path) -> GatewayConfig:
    """Read and validate the gateway's TOML file.

    Relative folders are taken relative to the file's own folder.

    Raises
    ------
    GatewayConfigError
        One line naming the file, the key and what is wrong.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GatewayConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GatewayConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(raw, source=str(path), base=path.parent)


def parse_config(raw: dict[str, Any], *, source: str = "config",
                 base: Path | None = None) -> GatewayConfig:
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise GatewayConfigError(f"{source}: {where}: {message}{more}") from None
    if config.pull is not None and config.pull.ae_title not in config.dicom.allowed_ae_titles:
        # The PACS sends the moved objects back with its own AE title.
        config.dicom.allowed_ae_titles.append(config.pull.ae_title)
    if base is not None:
        config.queue.folder = base / config.queue.folder
        if config.watch.folder is not None:
            config.watch.folder = base / config.watch.folder
    return config
