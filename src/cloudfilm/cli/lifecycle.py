"""``cloudfilm retention ...`` (rules, review list, two-step deletion, legal holds) and
``cloudfilm storage tier`` (hot/cold moves), through the same services, rules and audit as
the REST API. Changes name the person acting (``--by``): the audit trail records them, and
a deletion must be executed by another person than the one who proposed it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from cloudfilm.cli.common import data_option
from cloudfilm.cli.common import echo as _echo
from cloudfilm.cli.common import run as _run
from cloudfilm.cli.common import services as _services
from cloudfilm.services.access.actor import LOCAL_OPERATOR, Actor

by_option = click.option("--by", "by", required=True,
                         help="Who is acting (recorded in the audit trail).")


def _life(data: Path | None) -> Any:
    return _services(data).lifecycle


def _actor(by: str) -> Actor:
    return Actor(kind="operator", subject=f"cli:{by.strip()}"[:120], display=by.strip())


@click.group()
def retention() -> None:
    """Retention rules, the review list, two-step deletion, legal holds."""


@retention.command("rules")
@data_option
def rules(data: Path | None) -> None:
    """The retention rules (the default applies where none matches)."""
    _echo([asdict(r) for r in _run(lambda: _life(data).rules(LOCAL_OPERATOR))])


@retention.command("rule-add")
@data_option
@by_option
@click.option("--name", required=True)
@click.option("--years", type=int, required=True, help="Years from the study date.")
@click.option("--modality", default="", help="Only studies with this modality.")
@click.option("--hospital", "hospital_code", default="", help="Only this hospital's studies.")
@click.option("--kind", "study_kind", default="",
              help="Only studies whose description contains this (case-insensitive).")
@click.option("--minor-age", type=int, default=None,
              help="A patient younger than this at the study: keep until this age ...")
@click.option("--minor-years", type=int, default=0, help="... plus this many years.")
def rule_add(data: Path | None, by: str, name: str, years: int, modality: str,
             hospital_code: str, study_kind: str, minor_age: int | None,
             minor_years: int) -> None:
    """Add a retention rule (the longest end of the matching rules wins)."""
    from cloudfilm.services.lifecycle.service import RuleInput

    rule = RuleInput(name=name, years=years, modality=modality, hospital_code=hospital_code,
                     study_kind=study_kind, minor_age=minor_age, minor_years=minor_years)
    _echo(asdict(_run(lambda: _life(data).add_rule(_actor(by), rule))))


@retention.command("rule-retire")
@data_option
@by_option
@click.argument("rule_id", type=int)
def rule_retire(data: Path | None, by: str, rule_id: int) -> None:
    """Stop applying a rule (kept, inactive, for the record)."""
    _echo(asdict(_run(lambda: _life(data).retire_rule(_actor(by), rule_id))))


@retention.command("review")
@data_option
@click.option("--limit", default=1000, show_default=True)
def review(data: Path | None, limit: int) -> None:
    """Studies whose retention has ended (nothing is deleted by this)."""
    due = _run(lambda: _life(data).review(LOCAL_OPERATOR, limit=limit))
    click.echo("study\thospital\tstudy_date\tmodalities\tretention_end\trule\tobjects\tbytes"
               "\theld")
    for d in due:
        click.echo(f"{d.study_instance_uid}\t{d.hospital_code}\t{d.study_date}\t"
                   f"{','.join(d.modalities)}\t{d.retention_end}\t{d.rule}\t{d.objects}\t"
                   f"{d.size_bytes}\t{'HELD' if d.held else ''}")
    click.echo(f"{len(due)} study(ies) past retention, "
               f"{sum(1 for d in due if d.held)} under legal hold")


@retention.command("propose")
@data_option
@by_option
@click.option("--reason", required=True)
@click.option("--study", "studies", multiple=True,
              help="Only these studies (default: every due study not held).")
def propose(data: Path | None, by: str, reason: str, studies: tuple[str, ...]) -> None:
    """Step 1 of a deletion: record what would be deleted (nothing is deleted yet)."""
    view = _run(lambda: _life(data).propose_deletion(
        _actor(by), reason=reason, study_uids=list(studies) or None))
    click.echo(f"deletion request {view.id}: {len(view.studies)} studies, {view.objects} "
               f"objects, {view.size_bytes} bytes; another administrator executes it with "
               f"`cloudfilm retention execute {view.id} --by NAME`")


@retention.command("execute")
@data_option
@by_option
@click.argument("request_id", type=int)
def execute(data: Path | None, by: str, request_id: int) -> None:
    """Step 2, by another person: delete what is still due and not held."""
    view = _run(lambda: _life(data).execute_deletion(_actor(by), request_id))
    deleted = sum(1 for v in view.result.values() if v == "deleted")
    click.echo(f"deleted {deleted} of {len(view.result)} studies")
    for uid, outcome in sorted(view.result.items()):
        if outcome != "deleted":
            click.echo(f"kept {uid}: {outcome}")


@retention.command("cancel")
@data_option
@by_option
@click.argument("request_id", type=int)
def cancel(data: Path | None, by: str, request_id: int) -> None:
    """Cancel a proposed deletion."""
    _echo(asdict(_run(lambda: _life(data).cancel_deletion(_actor(by), request_id))))


@retention.command("requests")
@data_option
def requests(data: Path | None) -> None:
    """Deletion requests, newest first."""
    _echo([asdict(v) for v in _run(lambda: _life(data).deletions(LOCAL_OPERATOR))])


@retention.command("hold")
@data_option
@by_option
@click.option("--reason", required=True, help="The case, order or reason.")
@click.option("--study", default="", help="A study instance UID ...")
@click.option("--hospital", default="", help="... or a patient: hospital code ...")
@click.option("--patient", default="", help="... and PatientID.")
def hold(data: Path | None, by: str, reason: str, study: str, hospital: str,
         patient: str) -> None:
    """Place a legal hold (no deletion, tier move or re-encoding until released)."""
    _echo(asdict(_run(lambda: _life(data).place_hold(
        _actor(by), reason=reason, study_uid=study, hospital_code=hospital,
        patient_id=patient))))


@retention.command("release")
@data_option
@by_option
@click.option("--reason", required=True)
@click.argument("hold_id", type=int)
def release(data: Path | None, by: str, reason: str, hold_id: int) -> None:
    """Release a legal hold."""
    _echo(asdict(_run(lambda: _life(data).release_hold(_actor(by), hold_id, reason=reason))))


@retention.command("holds")
@data_option
@click.option("--all", "show_all", is_flag=True, help="Released holds too.")
def holds(data: Path | None, show_all: bool) -> None:
    """Legal holds in force (or all)."""
    _echo([asdict(h) for h in _run(lambda: _life(data).holds(
        LOCAL_OPERATOR, active_only=not show_all))])


@click.command("tier")
@data_option
@click.option("--run", "run_now", is_flag=True,
              help="Also run the moves here now (else the job workers do).")
def storage_tier(data: Path | None, run_now: bool) -> None:
    """Plan hot-to-cold moves by the tier rule; show objects and bytes per tier."""
    storage = _services(data).storage
    if storage is None or storage.tiers is None:
        raise click.ClickException("no cold tier is configured (CLOUDFILM_STORAGE__COLD_URL)")
    planned = storage.tiers.plan()
    click.echo(f"{planned} object(s) to move cold")
    if run_now:
        states = storage.run_pending()
        click.echo("  ".join(f"{k}={v}" for k, v in sorted(states.items())) or "nothing run")
    for tier, (objects, size) in sorted(storage.tiers.counts().items()):
        click.echo(f"{tier}: {objects} objects, {size} bytes")


