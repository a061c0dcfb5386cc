"""``cloudfilm reports ...``: what a platform operator checks about reports, through the
same service (policy and audit) as the API, acting as the local operator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.container import Services
from cloudfilm.services.errors import CloudfilmError

data_option = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="Data folder of the embedded default [env CLOUDFILM_DATA_DIR]")


def _services(data: Path | None) -> Services:
    from cloudfilm.app import build_services
    from cloudfilm.cli.main import _common, _settings

    return build_services(_settings(**_common(data)))


@click.group()
def reports() -> None:
    """Diagnostic reports: held reports, upload timeliness."""


@reports.command("held")
@data_option
@click.option("--hospital", default=None, help="Only this hospital's reports (its code)")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
def reports_held(data: Path | None, hospital: str | None, limit: int) -> None:
    """Reports still waiting for their study's images, newest exam first."""
    try:
        held = _services(data).reports.search(actor=LOCAL_OPERATOR, link_state="held",
                                              hospital_code=hospital, limit=limit)
    except CloudfilmError as exc:
        raise click.ClickException(exc.message) from exc
    if not held:
        click.echo("no held reports")
        return
    for r in held:
        waiting = datetime.now(UTC) - r.received_at
        click.echo(f"{r.report_id}  {r.hospital_code:<12} study {r.study_instance_uid or '-'} "
                   f"accession {r.accession_number or '-'}  waiting "
                   f"{waiting.total_seconds() / 3600:.1f} h  {r.title}")


@reports.command("timeliness")
@data_option
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 366),
              help="Exams of the last N days")
@click.option("--hospital", default=None, help="Only this hospital (its code)")
def reports_timeliness(data: Path | None, days: int, hospital: str | None) -> None:
    """Studies and reports received within the upload deadline, per hospital."""
    until = datetime.now(UTC)
    svc = _services(data).reports
    try:
        rows = svc.timeliness(actor=LOCAL_OPERATOR, since=until - timedelta(days=days),
                              until=until, hospital_code=hospital)
    except CloudfilmError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"exams of the last {days} day(s); deadline {svc.deadline_hours} h")
    click.echo(f"{'hospital':<14}{'studies':>8}{'late':>6}{'reports':>9}{'late':>6}"
               f"{'no report':>11}")
    for t in rows:
        click.echo(f"{t.hospital_code:<14}{t.studies:>8}{t.studies_late:>6}{t.reports:>9}"
                   f"{t.reports_late:>6}{t.studies_without_report:>11}")
