"""``cloudfilm reconcile ...``: the reconciliation queue (objects stored but held out of the
index: no PatientID, or a study UID another hospital holds), through the same service
(scope and audit) as the API, acting as the local operator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cloudfilm.services.archive.reconcile import HeldItem, ReconciliationService
from cloudfilm.services.errors import CloudfilmError
from cloudfilm.services.kernel.actor import LOCAL_OPERATOR

data_option = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="Data folder of the embedded default [env CLOUDFILM_DATA_DIR]")


def _queue(data: Path | None) -> ReconciliationService:
    from cloudfilm.app import build_services
    from cloudfilm.cli.main import _common, _settings

    queue = build_services(_settings(**_common(data))).reconcile
    if queue is None:
        raise click.ClickException("the reconciliation queue is not configured")
    return queue


def _run(action: Callable[[], Any]) -> Any:
    try:
        return action()
    except CloudfilmError as exc:
        raise click.ClickException(exc.message) from exc


def _line(item: HeldItem) -> str:
    s = item.summary
    return (f"{item.id:>6}  {item.hospital_code:<12} {item.reason:<14} {item.state:<10} "
            f"{s.get('study_date') or '-':<8} {s.get('modality') or '-':<4} "
            f"{s.get('patient_name') or '-'}  study {item.study_instance_uid}")


@click.group()
def reconcile() -> None:
    """Objects held for reconciliation (no PatientID, or another hospital's study UID)."""


@reconcile.command("list")
@data_option
@click.option("--hospital", default=None, help="Only this hospital's items (its code)")
@click.option("--state", default="open", show_default=True,
              type=click.Choice(["open", "assigned", "copy", "own-study", "all"]))
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 500))
def list_items(data: Path | None, hospital: str | None, state: str, limit: int) -> None:
    """Held objects, oldest first."""
    items = _run(lambda: _queue(data).list(actor=LOCAL_OPERATOR, hospital_code=hospital,
                                           state=None if state == "all" else state,
                                           limit=limit))
    if not items:
        click.echo("nothing held")
    for item in items:
        click.echo(_line(item))


@reconcile.command("show")
@data_option
@click.argument("item_id", type=int)
def show(data: Path | None, item_id: int) -> None:
    """One held object, with what its header says."""
    import json

    item = _run(lambda: _queue(data).get(item_id, actor=LOCAL_OPERATOR))
    click.echo(json.dumps(item.as_json(), ensure_ascii=False, indent=2))


@reconcile.command("assign")
@data_option
@click.argument("item_id", type=int)
@click.option("--patient-id", default="", help="The hospital's local patient ID")
@click.option("--issuer", default="", help="Issuer of that patient ID, if any")
@click.option("--national-id", default="",
              help="A national ID: the record of this hospital linked to that resident")
def assign(data: Path | None, item_id: int, patient_id: str, issuer: str,
           national_id: str) -> None:
    """File an object without PatientID under one of its hospital's patients."""
    item = _run(lambda: _queue(data).assign(item_id, actor=LOCAL_OPERATOR,
                                            patient_id=patient_id, issuer=issuer,
                                            national_id=national_id))
    click.echo(f"item {item.id}: {item.state}; filed as {item.result.get('sop_instance_uid')} "
               f"in study {item.result.get('study_instance_uid')}")


@reconcile.command("copy")
@data_option
@click.argument("item_id", type=int)
def copy(data: Path | None, item_id: int) -> None:
    """Close a study-UID clash as a genuine copy of the other hospital's study."""
    item = _run(lambda: _queue(data).mark_copy(item_id, actor=LOCAL_OPERATOR))
    click.echo(f"item {item.id}: {item.state} of study {item.study_instance_uid}")


@reconcile.command("keep")
@data_option
@click.argument("item_id", type=int)
def keep(data: Path | None, item_id: int) -> None:
    """File a study-UID clash as its hospital's own study, under new UIDs."""
    item = _run(lambda: _queue(data).keep_own(item_id, actor=LOCAL_OPERATOR))
    click.echo(f"item {item.id}: {item.state}; now study "
               f"{item.result.get('study_instance_uid')}")
