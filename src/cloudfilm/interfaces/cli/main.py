"""The ``cloudfilm`` command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from cloudfilm.config import ConfigError, Settings, load_settings


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _common(data: Path | None) -> dict[str, Any]:
    return {"data_dir": data} if data is not None else {}


data_option = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="Data folder of the embedded default (index and blobs). "
                                "[env CLOUDFILM_DATA_DIR; default ./cloudfilm-data]")


@click.group()
@click.version_option(package_name="cloudfilm")
def cli() -> None:
    """cloudfilm: a regional medical-imaging cloud (DICOM archive, DICOMweb, DIMSE)."""


@cli.command()
@data_option
@click.option("--host", default=None, help="HTTP bind address [env CLOUDFILM_HTTP__HOST]")
@click.option("--port", type=int, default=None, help="HTTP port [env CLOUDFILM_HTTP__PORT]")
def serve(data: Path | None, host: str | None, port: int | None) -> None:
    """Run the platform: HTTP (DICOMweb, REST, pages)."""
    import uvicorn

    from cloudfilm.app import build_http_app, configure_logging

    settings = _settings(**_common(data))
    if host:
        settings.http.host = host
    if port:
        settings.http.port = port
    configure_logging(json=settings.log_json)
    app = build_http_app(settings)
    click.echo(f"cloudfilm: DICOMweb at http://{settings.http.host}:{settings.http.port}"
               f"/dicomweb, API docs at /docs; data in {settings.data_dir.resolve()}", err=True)
    uvicorn.run(app, host=settings.http.host, port=settings.http.port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=30)


@cli.command("import")
@data_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--workers", default=4, show_default=True, help="Files ingested in parallel.")
def import_(data: Path | None, paths: tuple[Path, ...], workers: int) -> None:
    """Import DICOM files and folders (recursively) through the ingest pipeline."""
    from cloudfilm.app import build_services, configure_dicom_libraries
    from cloudfilm.interfaces.cli.importer import run_import

    settings = _settings(**_common(data))
    configure_dicom_libraries()
    summary = run_import(build_services(settings), list(paths), workers=workers)
    sys.exit(0 if summary.failed == 0 else 1)


@cli.group()
def db() -> None:
    """Index database schema."""


@db.command("upgrade")
@data_option
def db_upgrade(data: Path | None) -> None:
    """Migrate the index database to the latest schema."""
    from cloudfilm.infrastructure.db import migrate

    settings = _settings(**_common(data))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.effective_database_url)
    click.echo("database is at the latest schema")


@cli.group()
def storage() -> None:
    """Blob storage upkeep."""


@storage.command("sweep")
@data_option
@click.option("--min-age", default=3600.0, show_default=True,
              help="Only blobs older than this many seconds are removed.")
@click.option("--dry-run", is_flag=True, help="List orphans without removing them.")
def storage_sweep(data: Path | None, min_age: float, dry_run: bool) -> None:
    """Remove blobs that no index record references (left by a crash mid-ingest)."""
    from cloudfilm.app import build_services

    services = build_services(_settings(**_common(data)))
    report = services.maintenance.sweep_orphans(min_age_seconds=min_age, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"scanned {report.scanned} blobs; {len(report.orphans)} orphans; "
               f"{verb} {len(report.orphans) if dry_run else report.removed}")


if __name__ == "__main__":
    cli()
