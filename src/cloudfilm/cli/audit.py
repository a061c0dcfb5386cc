"""``cloudfilm audit ...``: verify the hash chain of the audit trail."""

from __future__ import annotations

from pathlib import Path

import click

from cloudfilm.services.errors import CloudfilmError

data_option = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="Data folder of the embedded default [env CLOUDFILM_DATA_DIR]")


@click.group()
def audit() -> None:
    """The audit trail: every access decision, sign-in, grant and link change."""


@audit.command("verify")
@data_option
def audit_verify(data: Path | None) -> None:
    """Walk the chain and report the first broken row (exit status 1 if any)."""
    from cloudfilm.app import build_services
    from cloudfilm.cli.main import _common, _settings

    try:
        report = build_services(_settings(**_common(data))).audit.verify()
    except CloudfilmError as exc:
        raise click.ClickException(exc.message) from exc
    if report.ok:
        click.echo(f"audit chain intact: {report.rows} record(s) verified")
        return
    where = f"seq {report.broken_seq}" + (f" (id {report.broken_id})"
                                          if report.broken_id is not None else "")
    click.echo(f"audit chain BROKEN at {where}: {report.problem}; "
               f"{report.rows} record(s) before it verified", err=True)
    raise SystemExit(1)
