"""The ``cloudfilm`` command."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cloudfilm.cli.lazy import LazyGroup

if TYPE_CHECKING:
    from cloudfilm.config import Settings

# Command groups that live in their own modules, imported on first use so that `--help` and
# simple commands do not load the services (issue 12). The summary is the listing's line
# (tests/unit/cli/test_lazy_cli.py keeps it equal to the command's docstring).
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "accounts": ("cloudfilm.cli.access:accounts",
                 "Doctor and administrator accounts (residents register with their phone)."),
    "ai": ("cloudfilm.cli.ai:ai",
           "AI assistance: algorithms, their approval and hospitals, the UPS worklist."),
    "backup": ("cloudfilm.cli.storage:backup_command",
               "Back up the embedded platform (SQLite snapshot + blobs + manifest) into DEST."),
    "audit": ("cloudfilm.cli.audit:audit",
              "The audit trail: every access decision, sign-in, grant and link change."),
    "demo": ("cloudfilm.cli.demo:demo",
             "Create a synthetic province and load it over C-STORE and STOW-RS, with its "
             "diagnostic reports (DICOM SR over C-STORE, FHIR DiagnosticReport over REST)."),
    "gateway": ("cloudfilm.cli.gateway:gateway",
                "The hospital edge gateway: receive, queue durably, forward to the cloud."),
    "hospitals": ("cloudfilm.cli.hospitals:hospitals",
                  "Hospital registry: hospitals, their AE titles and API credentials."),
    "jobs": ("cloudfilm.cli.storage:jobs",
             "Background jobs (lossless re-encoding, scrubbing): list, retry, run."),
    "migrate-index": ("cloudfilm.cli.storage:migrate_index_command",
                      "Copy the embedded SQLite index into an empty PostgreSQL database."),
    "reconcile": ("cloudfilm.cli.reconcile:reconcile",
                  "Objects held for reconciliation (no PatientID, or another hospital's study "
                  "UID)."),
    "recognition": ("cloudfilm.cli.recognition:recognition",
                    "Exam mutual recognition (检查检验结果互认): rules, checks, what they saved."),
    "reports": ("cloudfilm.cli.reports:reports",
                "Diagnostic reports: held reports, upload timeliness."),
    "research": ("cloudfilm.cli.research:research",
                 "De-identified research projects: propose, approve, count, export."),
    "residents": ("cloudfilm.cli.hospitals:residents",
                  "Residents and the master patient index: cross-reference, conflicts, link, "
                  "merge."),
    "retention": ("cloudfilm.cli.lifecycle:retention",
                  "Retention rules, the review list, two-step deletion, legal holds."),
    "restore": ("cloudfilm.cli.storage:restore_command",
                "Restore a `cloudfilm backup` folder into an empty data folder."),
    "sms": ("cloudfilm.cli.access:sms", "Text messages of the platform."),
    "stats": ("cloudfilm.cli.stats:stats",
              "The commission's dashboard: coverage, the 12-hour rule, use, storage; the "
              "rollup."),
}


def _settings(**overrides: Any) -> Settings:
    from cloudfilm.config import ConfigError, load_settings

    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _common(data: Path | None) -> dict[str, Any]:
    return {"data_dir": data} if data is not None else {}


data_option = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="Data folder of the embedded default (index and blobs). "
                                "[env CLOUDFILM_DATA_DIR; default ./cloudfilm-data]")


class _Cli(LazyGroup):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            # A configuration problem met anywhere below (settings, secrets, database URL,
            # storage URL) is one line for the operator, not a traceback. cloudfilm.config is
            # only looked up: if it was never imported, this cannot be its error.
            config = sys.modules.get("cloudfilm.config")
            if config is not None and isinstance(exc, config.ConfigError):
                raise click.ClickException(str(exc)) from exc
            raise


@click.group(cls=_Cli, lazy_subcommands=LAZY_COMMANDS)
@click.version_option(package_name="cloudfilm")
def cli() -> None:
    """cloudfilm: a regional medical-imaging cloud (DICOM archive, DICOMweb, DIMSE)."""


def _dimse_overrides(settings: Settings, ae_title: str | None, dicom_host: str | None,
                     dicom_port: int | None) -> None:
    if ae_title:
        settings.dimse.ae_title = ae_title
    if dicom_host:
        settings.dimse.host = dicom_host
    if dicom_port is not None:
        settings.dimse.port = dicom_port


ae_title_option = click.option("--ae-title", default=None,
                               help="Our DICOM AE title [env CLOUDFILM_DIMSE__AE_TITLE]")
dicom_host_option = click.option("--dicom-host", default=None,
                                 help="DIMSE bind address [env CLOUDFILM_DIMSE__HOST]")
dicom_port_option = click.option("--dicom-port", type=int, default=None,
                                 help="DIMSE port [env CLOUDFILM_DIMSE__PORT; default 11112]")


@cli.command()
@data_option
@click.option("--host", default=None, help="HTTP bind address [env CLOUDFILM_HTTP__HOST]")
@click.option("--port", type=int, default=None, help="HTTP port [env CLOUDFILM_HTTP__PORT]")
@ae_title_option
@dicom_host_option
@dicom_port_option
@click.option("--workers", type=int, default=None,
              help="HTTP worker processes [env CLOUDFILM_HTTP__WORKERS; default 1]")
def serve(data: Path | None, host: str | None, port: int | None, ae_title: str | None,
          dicom_host: str | None, dicom_port: int | None, workers: int | None) -> None:
    """Run the platform: HTTP (DICOMweb, REST, pages) and the DIMSE listener."""
    import uvicorn

    from cloudfilm.app import (
        build_dimse_server,
        build_services,
        configure_dicom_libraries,
        configure_logging,
        freeze_startup_objects,
        uvicorn_options,
        web_options,
    )
    from cloudfilm.infrastructure.reports.render import cjk_font_available
    from cloudfilm.interfaces.api.http import create_app

    settings = _settings(**_common(data))
    if host:
        settings.http.host = host
    if port:
        settings.http.port = port
    if workers:
        settings.http.workers = workers
    _dimse_overrides(settings, ae_title, dicom_host, dicom_port)
    configure_logging(json=settings.log_json)
    configure_dicom_libraries()
    services = build_services(settings)  # migrates and prepares secrets once, here
    app: Any = create_app(services, web=web_options(settings))
    freeze_startup_objects()
    dimse = None
    if settings.dimse.enabled:
        dimse = _start_dimse(build_dimse_server, services, settings)
    click.echo(f"cloudfilm: DICOMweb at http://{settings.http.host}:{settings.http.port}"
               f"/dicomweb, API docs at /docs; data in {settings.data_dir.resolve()}", err=True)
    if not cjk_font_available():
        click.echo("cloudfilm: warning: no Chinese font found (fc-list :lang=zh); report PDFs "
                   "would show boxes. Install one, e.g. `apt-get install fonts-noto-cjk`.",
                   err=True)
    options: dict[str, Any] = {}
    if settings.http.workers > 1:
        # Worker processes build their own services from the environment; this process
        # keeps the DIMSE listener and supervises them.
        os.environ.update({
            "CLOUDFILM_DATA_DIR": str(settings.data_dir.resolve()),
            "CLOUDFILM_HTTP__HOST": settings.http.host,
            "CLOUDFILM_HTTP__PORT": str(settings.http.port),
            "CLOUDFILM_AUTO_MIGRATE": "false",
        })
        app = "cloudfilm.app:http_app_from_environment"
        options = {"factory": True, "workers": settings.http.workers}
    jobs = _start_job_workers(settings)
    rollups = _start_rollups(services, settings)
    if settings.http.workers <= 1:
        from cloudfilm.app import warm_dashboard

        warm_dashboard(services)  # (each worker process warms its own)
    try:
        # uvicorn handles SIGINT/SIGTERM and returns after its graceful shutdown.
        uvicorn.run(app, host=settings.http.host, port=settings.http.port,
                    log_level="warning", access_log=False, timeout_graceful_shutdown=30,
                    **options, **uvicorn_options(settings))
    finally:
        # The app's lifespan wrote each process's open frame-audit windows at shutdown.
        if dimse is not None:
            dimse.stop(grace=30)
        if jobs is not None:
            _stop_job_workers(jobs)
        if rollups is not None:
            rollups.set()


def _start_rollups(services: Any, settings: Settings) -> Any:
    """The dashboard's rollup every ``stats.rollup_minutes`` in a thread of this process
    (one per deployment: worker processes do not run it). Returns the stop event."""
    import logging
    import threading

    minutes = settings.stats.rollup_minutes
    if not minutes or services.stats is None:
        return None
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                services.stats.rollup.run()
            except Exception:  # a failed run is retried at the next tick; never kill serve
                logging.getLogger(__name__).exception("cloudfilm.stats.rollup_failed")
            stop.wait(minutes * 60)

    threading.Thread(target=loop, name="stats-rollup", daemon=True).start()
    return stop


def _start_job_workers(settings: Settings) -> Any:
    """Background storage jobs run in their own process group (``cloudfilm jobs worker``)
    when there is work for them: re-encoding, a replica to scrub against, or AI plug-ins
    (``ai.background``)."""
    import subprocess

    conf = settings.storage
    if settings.jobs.workers == 0 or not (conf.compress or conf.replica_url or conf.cold_url
                                          or settings.ai.background):
        return None
    env = {**os.environ, "CLOUDFILM_DATA_DIR": str(settings.data_dir.resolve()),
           "CLOUDFILM_AUTO_MIGRATE": "false"}
    return subprocess.Popen([sys.executable, "-m", "cloudfilm", "jobs", "worker",
                             "--die-with-parent"], env=env)


def _stop_job_workers(process: Any) -> None:
    import subprocess

    process.terminate()  # huey finishes the running jobs' current step, then exits
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def _start_dimse(build: Any, services: Any, settings: Settings, *,
                 sibling: bool = False) -> Any:
    from cloudfilm.config import ConfigError

    try:
        dimse = build(services, settings)
        dimse.start()
    except (ConfigError, OSError, ValueError) as exc:
        raise click.ClickException(f"cannot start the DIMSE listener on "
                                   f"{settings.dimse.host}:{settings.dimse.port}: {exc}") from exc
    if sibling:
        return dimse
    if settings.dimse.processes > 1:
        from cloudfilm.interfaces.dimse.siblings import start_siblings

        dimse.siblings = start_siblings(settings, dimse.port, dimse.tls_port)
    click.echo(f"cloudfilm: DIMSE AE {settings.dimse.ae_title} on "
               f"{settings.dimse.host}:{dimse.port}", err=True)
    return dimse


@cli.command()
@data_option
@ae_title_option
@dicom_host_option
@dicom_port_option
@click.option("--sibling", is_flag=True, hidden=True)
def dimse(data: Path | None, ae_title: str | None, dicom_host: str | None,
          dicom_port: int | None, sibling: bool) -> None:
    """Run only the DIMSE listener (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET)."""
    import signal

    from cloudfilm.app import (
        build_dimse_server,
        build_services,
        configure_dicom_libraries,
        configure_logging,
        freeze_startup_objects,
    )

    if sibling:  # started by a listener with dimse.processes > 1: never outlive it
        from cloudfilm.app import die_with_parent

        die_with_parent()
    settings = _settings(**_common(data))
    _dimse_overrides(settings, ae_title, dicom_host, dicom_port)
    configure_logging(json=settings.log_json)
    configure_dicom_libraries()
    services = build_services(settings)
    freeze_startup_objects()
    server = _start_dimse(build_dimse_server, services, settings, sibling=sibling)

    def _stop(signum: int, _frame: Any) -> None:
        import threading

        # stop() waits for associations; run it off the signal handler's frame.
        threading.Thread(target=server.stop, kwargs={"grace": 30}, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.wait()


@cli.group()
def peers() -> None:
    """DICOM peers: the hospitals' AE titles allowed to associate, and C-MOVE destinations."""


@peers.command("add")
@data_option
@click.argument("ae_title")
@click.argument("host")
@click.argument("port", type=int)
@click.option("--hospital", "hospital_code", required=True,
              help="Code of the hospital whose objects this AE sends.")
@click.option("--description", default="", help="Free text, e.g. the hospital's name.")
@click.option("--allow-from", "allowed_from", default="",
              help="Where the AE may call from: host names, IPs or networks (CIDR, e.g. "
                   "10.8.0.0/24), comma-separated. Default: HOST only.")
def peers_add(data: Path | None, ae_title: str, host: str, port: int, hospital_code: str,
              description: str, allowed_from: str) -> None:
    """Register AE_TITLE at HOST:PORT for a hospital (associations only from HOST or
    --allow-from; C-MOVE sends to HOST:PORT)."""
    from cloudfilm.services.errors import CloudfilmError

    services = _peer_services(data)
    try:
        peer = services.peers.register(ae_title, host, port, hospital_code=hospital_code,
                                       description=description, allowed_from=allowed_from)
    except CloudfilmError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"registered {peer.ae_title} at {peer.host}:{peer.port} "
               f"for hospital {peer.hospital_code}, calling from "
               f"{', '.join(peer.address_rules)}")


@peers.command("list")
@data_option
def peers_list(data: Path | None) -> None:
    """List registered peers."""
    rows = _peer_services(data).peers.list()
    if not rows:
        click.echo("no DICOM peers registered (cloudfilm peers add AE HOST PORT --hospital X)")
    for p in rows:
        click.echo(f"{p.ae_title:<16}  {p.host}:{p.port:<5}  {p.hospital_code:<12}  "
                   f"from {','.join(p.address_rules)}  {p.description}")


@peers.command("remove")
@data_option
@click.argument("ae_title")
def peers_remove(data: Path | None, ae_title: str) -> None:
    """Remove the peer AE_TITLE (its next association is rejected)."""
    from cloudfilm.services.errors import CloudfilmError

    try:
        _peer_services(data).peers.remove(ae_title)
    except CloudfilmError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"removed {ae_title.strip()}")


def _peer_services(data: Path | None) -> Any:
    from cloudfilm.app import build_services

    return build_services(_settings(**_common(data)))


@cli.command("import")
@data_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--workers", default=4, show_default=True, help="Files ingested in parallel.")
@click.option("--hospital", "hospital_code", default=None,
              help="Record the objects for this registered hospital (default: local uploads).")
def import_(data: Path | None, paths: tuple[Path, ...], workers: int,
            hospital_code: str | None) -> None:
    """Import DICOM files and folders (recursively) through the ingest pipeline."""
    from cloudfilm.app import build_services, configure_dicom_libraries
    from cloudfilm.cli.importer import run_import, sender_for
    from cloudfilm.services.errors import CloudfilmError

    settings = _settings(**_common(data))
    configure_dicom_libraries()
    services = build_services(settings)
    try:
        sender = sender_for(services, hospital_code)
    except CloudfilmError as exc:
        raise click.ClickException(exc.message) from exc
    summary = run_import(services, list(paths), workers=workers, sender=sender)
    sys.exit(0 if summary.failed == 0 else 1)


@cli.group()
def db() -> None:
    """Index database schema."""


@db.command("upgrade")
@data_option
def db_upgrade(data: Path | None) -> None:
    """Migrate the index database to the latest schema."""
    from cloudfilm.app import open_index

    open_index(_settings(**_common(data)), upgrade=True).engine.dispose()
    click.echo("database is at the latest schema")


@cli.group(cls=LazyGroup, lazy_subcommands={
    "verify": ("cloudfilm.cli.storage:storage_verify",
               "Re-read every blob, check its SHA-256, repair from the replica store if any."),
    "forecast": ("cloudfilm.cli.storage:storage_forecast",
                 "Bytes per modality and month, ratio achieved, projection to 5/10/30 years."),
    "tier": ("cloudfilm.cli.lifecycle:storage_tier",
             "Plan hot-to-cold moves by the tier rule; show objects and bytes per tier."),
})
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
