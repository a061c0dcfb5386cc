"""Composition root: build the engine, the blob store and the services once, hand them out.

FastAPI (``app.state.services``) and the DIMSE listener get the same :class:`Services`.
Library-wide settings of pydicom/pynetdicom are made here once, never per request.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import structlog
from fastapi import FastAPI

from cloudfilm.config import Settings
from cloudfilm.infrastructure.db import migrate
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.infrastructure.storage.factory import open_blob_store
from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.archive.ingest import IngestService
from cloudfilm.services.archive.maintenance import MaintenanceService
from cloudfilm.services.archive.query import QueryService
from cloudfilm.services.archive.retrieve import RetrieveService
from cloudfilm.services.container import Limits, Services
from cloudfilm.services.health import HealthService
from cloudfilm.services.network.peers import PeerService


def configure_logging(*, json: bool = False, level: int = logging.INFO) -> None:
    """structlog over stdlib logging: JSON lines in production, readable lines locally."""
    shared = [
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


def build_services(settings: Settings) -> Services:
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.effective_database_url
    if settings.auto_migrate:
        migrate.upgrade(url)
    db = Database(url)
    blobs = open_blob_store(settings.effective_storage_url, data_dir=data_dir)
    spool = _spool_dir(settings, data_dir)
    return Services(
        ingest=IngestService(db, blobs, spool),
        query=QueryService(db),
        retrieve=RetrieveService(db, blobs),
        health=HealthService(db, blobs),
        maintenance=MaintenanceService(db, blobs),
        peers=PeerService(db),
        limits=Limits(max_upload_bytes=settings.http.max_upload_bytes,
                      max_query_results=settings.http.max_query_results),
        spool_dir=spool,
    )


def _spool_dir(settings: Settings, data_dir: Path) -> Path:
    # Inside the local blob folder's filesystem when there is one, so ingest renames.
    blob_root = Path(settings.effective_storage_url)
    base = blob_root if blob_root.is_absolute() else data_dir
    spool = base / ".tmp" / "incoming"
    spool.mkdir(parents=True, exist_ok=True)
    return spool


def build_http_app(settings: Settings) -> FastAPI:
    configure_dicom_libraries()
    return create_app(build_services(settings))
