"""``cloudfilm jobs ...`` and ``cloudfilm storage verify``: background storage jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

# Not imported from cli.main: `python -m cloudfilm.cli.main` imports this module while
# cli.main is still running as __main__ (a circular import).
data_option = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="Data folder of the embedded default (index and blobs). "
                                "[env CLOUDFILM_DATA_DIR; default ./cloudfilm-data]")


def _settings(**overrides: Any) -> Any:
    from cloudfilm.config import ConfigError, load_settings

    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _common(data: Path | None) -> dict[str, Any]:
    return {"data_dir": data} if data is not None else {}


def _storage(data: Path | None) -> Any:
    from cloudfilm.app import build_services

    services = build_services(_settings(**_common(data)))
    assert services.storage is not None
    return services.storage


@click.group()
def jobs() -> None:
    """Background jobs (lossless re-encoding, scrubbing): list, retry, run."""


@jobs.command("list")
@data_option
@click.option("--state", default=None,
              type=click.Choice(["pending", "queued", "cleanup", "done", "left", "dead"]),
              help="Only jobs in this state (dead: the dead-letter list).")
@click.option("--limit", default=50, show_default=True)
def jobs_list(data: Path | None, state: str | None, limit: int) -> None:
    """Counts per state, then the latest jobs."""
    storage = _storage(data)
    counts = storage.job_counts()
    click.echo("  ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no jobs")
    for j in storage.jobs(state=state, limit=limit):
        click.echo(f"{j.id}\t{j.kind}\t{j.state}\t{j.attempts}\t{j.sop_instance_uid}\t"
                   f"{j.last_error}")


@jobs.command("retry")
@data_option
@click.argument("ids", nargs=-1, type=int)
def jobs_retry(data: Path | None, ids: tuple[int, ...]) -> None:
    """Put dead jobs (all, or the IDS given) back in the queue."""
    n = _storage(data).retry(list(ids) or None)
    click.echo(f"{n} job(s) queued again")


@jobs.command("run")
@data_option
@click.option("--limit", default=1000, show_default=True)
def jobs_run(data: Path | None, limit: int) -> None:
    """Run pending jobs in this process, then exit (no worker needed)."""
    states = _storage(data).run_pending(limit=limit)
    click.echo("  ".join(f"{k}={v}" for k, v in sorted(states.items())) or "nothing to do")


@jobs.command("worker")
@data_option
@click.option("--workers", type=int, default=None,
              help="Worker processes [env CLOUDFILM_JOBS__WORKERS; default 2]")
@click.option("--die-with-parent", is_flag=True, hidden=True)
def jobs_worker(data: Path | None, workers: int | None, die_with_parent: bool) -> None:
    """Run the job workers until interrupted (huey consumer and the outbox relay)."""
    from cloudfilm.app import configure_dicom_libraries, configure_logging
    from cloudfilm.app import die_with_parent as _die_with_parent
    from cloudfilm.worker import run_worker

    if die_with_parent:  # started by `cloudfilm serve`: never outlive it
        _die_with_parent()
    settings = _settings(**_common(data))
    configure_logging(json=settings.log_json)
    configure_dicom_libraries()
    run_worker(settings, workers=workers)


@click.command("verify")
@data_option
@click.option("--rate", type=float, default=None,
              help="At most this many bytes per second (default: as fast as possible).")
@click.option("--limit", type=int, default=None, help="Check at most this many objects.")
def storage_verify(data: Path | None, rate: float | None, limit: int | None) -> None:
    """Re-read every blob, check its SHA-256, repair from the replica store if any."""
    report = _storage(data).verify(bytes_per_second=rate, limit=limit)
    click.echo(f"checked {report.checked} objects ({report.bytes} bytes); "
               f"{len(report.mismatches)} mismatched, {len(report.missing)} missing, "
               f"{len(report.repaired)} repaired")
    for uid in sorted(set(report.mismatches + report.missing) - set(report.repaired)):
        click.echo(f"damaged: {uid}")
    if set(report.mismatches + report.missing) - set(report.repaired):
        raise SystemExit(1)

@click.command("forecast")
@data_option
@click.option("--raw-pb-per-year", type=float, default=None,
              help="Raw (as received) petabytes a year to project; default: this "
                   "archive's last 12 months.")
@click.option("--growth", type=float, default=0.0, show_default=True,
              help="Yearly growth of the raw volume (0.1 = 10 %).")
def storage_forecast(data: Path | None, raw_pb_per_year: float | None,
                     growth: float) -> None:
    """Bytes per modality and month, ratio achieved, projection to 5/10/30 years."""
    raw = raw_pb_per_year * 1e15 if raw_pb_per_year is not None else None
    storage = _storage(data)
    f = storage.forecast(raw_per_year=raw, growth=growth)
    click.echo("month\tmodality\tobjects\treceived_bytes\tstored_bytes\tratio")
    for r in f.rows:
        click.echo(f"{r.month}\t{r.modality}\t{r.objects}\t{r.received_bytes}\t"
                   f"{r.stored_bytes}\t{r.ratio:.2f}")
    click.echo(f"ratio achieved: {f.ratio:.2f}:1")
    for years, (raw_bytes, stored_bytes) in sorted(f.projection.items()):
        click.echo(f"{years} years: {_human(raw_bytes)} as received, "
                   f"{_human(stored_bytes)} stored")
    if storage.tiers is not None:
        for tier, (objects, size) in sorted(storage.tiers.counts().items()):
            click.echo(f"{tier} tier: {objects} objects, {_human(size)}")

def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB", "EB"):
        if abs(n) < 1000 or unit == "EB":
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} EB"


def _blob_store(settings: Any) -> Any:
    from cloudfilm.infrastructure.storage.factory import open_blob_store
    from cloudfilm.infrastructure.storage.mirror import MirroredBlobStore

    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    store = open_blob_store(settings.effective_storage_url, data_dir=data_dir)
    if settings.storage.replica_url:
        store = MirroredBlobStore(store, open_blob_store(settings.storage.replica_url,
                                                         data_dir=data_dir))
    if settings.storage.cold_url:  # a backup reads cold blobs too; a restore writes hot
        from cloudfilm.infrastructure.storage.tiered import TieredBlobStore

        store = TieredBlobStore(store, open_blob_store(settings.storage.cold_url,
                                                       data_dir=data_dir))
    return store


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.command("backup")
@data_option
@click.argument("dest", type=click.Path(path_type=Path, file_okay=False))
def backup_command(data: Path | None, dest: Path) -> None:
    """Back up the embedded platform (SQLite snapshot + blobs + manifest) into DEST."""
    from cloudfilm.services.storage import backup
    from cloudfilm.services.storage.backup import BackupError

    settings = _settings(**_common(data))
    try:
        report = backup.backup(settings.effective_database_url, _blob_store(settings), dest,
                               data_dir=settings.data_dir.resolve())
    except BackupError as exc:
        raise _fail(exc) from exc
    click.echo(f"backed up the index and {report.blobs} blobs ({report.bytes} bytes) to {dest}")


@click.command("restore")
@data_option
@click.argument("source", type=click.Path(path_type=Path, file_okay=False, exists=True))
def restore_command(data: Path | None, source: Path) -> None:
    """Restore a `cloudfilm backup` folder into an empty data folder."""
    from cloudfilm.services.storage import backup
    from cloudfilm.services.storage.backup import BackupError

    settings = _settings(**_common(data))
    store = _blob_store(settings)
    work = settings.data_dir.resolve()
    try:
        report = backup.restore(source, settings.effective_database_url, store, work,
                                data_dir=work)
    except BackupError as exc:
        raise _fail(exc) from exc
    click.echo(f"restored the index and {report.blobs} blobs ({report.bytes} bytes)")


@click.command("migrate-index")
@data_option
@click.option("--to", "target", required=True, help="postgresql://user@host/database")
def migrate_index_command(data: Path | None, target: str) -> None:
    """Copy the embedded SQLite index into an empty PostgreSQL database."""
    from cloudfilm.services.storage import backup
    from cloudfilm.services.storage.backup import BackupError

    settings = _settings(**_common(data))
    if not target.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        raise click.ClickException("--to takes a postgresql:// URL")
    try:
        counts = backup.migrate_index(settings.effective_database_url, target)
    except BackupError as exc:
        raise _fail(exc) from exc
    click.echo(f"copied {sum(counts.values())} rows in {len(counts)} tables; now set "
               "CLOUDFILM_DATABASE_URL to the PostgreSQL URL and the CLOUDFILM_SECURITY__* "
               "keys to the values in secrets.toml of the data folder")
