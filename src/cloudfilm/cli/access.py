"""``cloudfilm sms ...`` and ``cloudfilm accounts ...``: the local SMS outbox and accounts."""

from __future__ import annotations

from pathlib import Path

import click

from cloudfilm.cli.hospitals import _run, _services, data_option


@click.group()
def sms() -> None:
    """Text messages of the platform."""


@sms.command("outbox")
@data_option
@click.option("--phone", default=None, help="Only messages to this number.")
@click.option("--limit", type=int, default=20, show_default=True)
def sms_outbox(data: Path | None, phone: str | None, limit: int) -> None:
    """Messages kept by the local "outbox" backend (nothing was sent), newest first."""
    services = _services(data)
    if not services.sms.sender.local:
        click.echo("the SMS backend is a provider (sms.backend = http): no local outbox",
                   err=True)
    for m in _run(lambda: services.sms.outbox(phone=phone, limit=limit)):
        click.echo(f"{m.id:>6}  {m.created_at:%Y-%m-%d %H:%M:%S}  {m.phone_masked}  "
                   f"{m.template}  {m.text}")


@click.group()
def accounts() -> None:
    """Doctor and administrator accounts (residents register with their phone)."""


@accounts.command("add")
@data_option
@click.argument("username")
@click.option("--kind", type=click.Choice(["doctor", "hospital_admin", "admin", "bureau"]),
              default="doctor", show_default=True)
@click.option("--name", "display_name", required=True, help="Name residents will see.")
@click.option("--hospital", "hospital_code", default=None,
              help="Hospital code (doctor, hospital_admin).")
@click.option("--department", default="")
@click.option("--area", default="", help="A health bureau's area: CITY or CITY/COUNTY.")
@click.password_option(help="At least 10 characters (prompted when omitted).")
def accounts_add(data: Path | None, username: str, kind: str, display_name: str,
                 hospital_code: str | None, department: str, area: str,
                 password: str) -> None:
    """Create account USERNAME (as the local operator)."""
    from cloudfilm.services.access.accounts import NewAccount
    from cloudfilm.services.access.actor import LOCAL_OPERATOR

    view = _run(lambda: _services(data).accounts.create_account(
        NewAccount(kind=kind, username=username, password=password,
                   display_name=display_name, hospital_code=hospital_code,
                   department=department, area=area), by=LOCAL_OPERATOR))
    where = f" of {view.hospital_code}" if view.hospital_code else ""
    click.echo(f"created {view.kind} account {view.id} {view.username}{where}")


@accounts.command("list")
@data_option
@click.option("--hospital", "hospital_code", default=None)
def accounts_list(data: Path | None, hospital_code: str | None) -> None:
    """Accounts, with their hospital and state."""
    from cloudfilm.services.access.actor import LOCAL_OPERATOR

    views = _run(lambda: _services(data).accounts.list_accounts(
        by=LOCAL_OPERATOR, hospital_code=hospital_code))
    for v in views:
        state = "active" if v.active else "inactive"
        if v.locked_until is not None:
            state += f", locked until {v.locked_until:%H:%M}"
        click.echo(f"{v.id:>6}  {v.kind:<14} {v.username or v.phone_masked:<24} "
                   f"{v.hospital_code or '-':<12} {v.department or '-':<16} {state}")
