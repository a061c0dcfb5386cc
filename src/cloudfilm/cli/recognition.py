"""``cloudfilm recognition ...``: the rules (catalogue, terms, code maps, prices), the
unmapped values, a check, and the savings figures, acting as the local operator through
the same service (rules history and audit) as the API."""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import orjson

from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.errors import CloudfilmError
from cloudfilm.services.recognition.service import REPEAT_REASONS as REASONS

data_option = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="Data folder of the embedded default [env CLOUDFILM_DATA_DIR]")
LEVELS = ("tertiary", "secondary", "primary")


def _svc(data: Path | None) -> Any:
    from cloudfilm.app import build_services
    from cloudfilm.cli.main import _common, _settings

    return build_services(_settings(**_common(data))).recognition


def _run(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except CloudfilmError as exc:
        raise click.ClickException(exc.message) from exc


@click.group()
def recognition() -> None:
    """Exam mutual recognition (检查检验结果互认): rules, checks, what they saved."""


@recognition.command("items")
@data_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
def items(data: Path | None, as_json: bool) -> None:
    """The catalogue of recognisable items."""
    found = _run(lambda: _svc(data).items())
    if as_json:
        click.echo(orjson.dumps([asdict(i) for i in found], option=orjson.OPT_INDENT_2))
        return
    for i in found:
        accept = "; ".join(f"{k}<-{','.join(v)}" for k, v in i.accept_levels.items())
        click.echo(f"{i.code:<12} {i.modality:<3} {i.body_region:<8} {i.procedure:<8} "
                   f"{i.window_days:>4} d  {'active' if i.active else 'inactive':<8} "
                   f"{i.name_zh} / {i.name_en}  [{accept}]")


@recognition.command("item-set")
@data_option
@click.argument("code")
@click.option("--name-zh")
@click.option("--name-en")
@click.option("--modality")
@click.option("--body-region")
@click.option("--procedure", type=click.Choice(["plain", "contrast", "any"]))
@click.option("--window-days", type=click.IntRange(1, 3650))
@click.option("--accept", multiple=True, metavar="LEVEL=L1,L2",
              help="Levels whose results LEVEL must accept (repeat for each level)")
@click.option("--require-final-report/--no-require-final-report", default=None)
@click.option("--require-complete/--no-require-complete", default=None)
@click.option("--require-qc/--no-require-qc", default=None)
@click.option("--dose-msv", type=float)
@click.option("--active/--inactive", default=None)
def item_set(data: Path | None, code: str, accept: tuple[str, ...], **values: Any) -> None:
    """Create or change a catalogue item (recorded in the rules history)."""
    changes = {k: v for k, v in values.items() if v is not None}
    if "dose_msv" in changes:
        changes["typical_dose_msv"] = changes.pop("dose_msv")
    if accept:
        levels: dict[str, list[str]] = {}
        for entry in accept:
            level, _, others = entry.partition("=")
            levels[level.strip()] = [o.strip() for o in others.split(",") if o.strip()]
        changes["accept_levels"] = levels
    item = _run(lambda: _svc(data).put_item(LOCAL_OPERATOR, {**changes, "code": code}))
    click.echo(f"{item.code}: {item.window_days} days, {item.accept_levels}")


@recognition.command("terms")
@data_option
@click.option("--field", "field_name", default=None)
def terms(data: Path | None, field_name: str | None) -> None:
    """The normalisation table."""
    for t in _run(lambda: _svc(data).terms(field_name=field_name)):
        click.echo(f"{t['field']:<15} {t['match']:<8} {t['pattern']:<24} -> {t['value']}")


@recognition.command("term-set")
@data_option
@click.argument("field_name", metavar="FIELD")
@click.argument("pattern")
@click.argument("value")
@click.option("--contains", is_flag=True, help="Match inside free text (default: exact)")
def term_set(data: Path | None, field_name: str, pattern: str, value: str,
             contains: bool) -> None:
    """Map a value: FIELD is body_part, description, procedure_code, modality, technique."""
    _run(lambda: _svc(data).put_term(LOCAL_OPERATOR, field_name, pattern, value,
                                     "contains" if contains else "exact"))
    click.echo(f"{field_name}: {pattern} -> {value}")


@recognition.command("term-remove")
@data_option
@click.argument("field_name", metavar="FIELD")
@click.argument("pattern")
def term_remove(data: Path | None, field_name: str, pattern: str) -> None:
    _run(lambda: _svc(data).put_term(LOCAL_OPERATOR, field_name, pattern, None))
    click.echo(f"removed {field_name}: {pattern}")


@recognition.command("map")
@data_option
@click.argument("hospital")
@click.argument("procedure_code")
@click.argument("item_code")
def map_code(data: Path | None, hospital: str, procedure_code: str, item_code: str) -> None:
    """Map a hospital's own procedure code to a catalogue item."""
    _run(lambda: _svc(data).put_code_map(LOCAL_OPERATOR, hospital, procedure_code, item_code))
    click.echo(f"{hospital}:{procedure_code} -> {item_code.upper()}")


@recognition.command("unmap")
@data_option
@click.argument("hospital")
@click.argument("procedure_code")
def unmap_code(data: Path | None, hospital: str, procedure_code: str) -> None:
    _run(lambda: _svc(data).put_code_map(LOCAL_OPERATOR, hospital, procedure_code, None))
    click.echo(f"unmapped {hospital}:{procedure_code}")


@recognition.command("prices")
@data_option
def prices(data: Path | None) -> None:
    for p in _run(lambda: _svc(data).prices()):
        click.echo(f"{p['item_code']:<12} {p['level']:<10} {p['price_yuan']:>10.2f}")


@recognition.command("price")
@data_option
@click.argument("item_code")
@click.argument("level", type=click.Choice(LEVELS))
@click.argument("yuan", type=float)
def price(data: Path | None, item_code: str, level: str, yuan: float) -> None:
    """Set the price of an item at a hospital level (yuan)."""
    _run(lambda: _svc(data).put_price(LOCAL_OPERATOR, item_code, level, yuan))
    click.echo(f"{item_code.upper()} {level}: {yuan:.2f}")


@recognition.command("unmapped")
@data_option
@click.option("--field", "field_name", default=None)
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 1000))
def unmapped(data: Path | None, field_name: str | None, limit: int) -> None:
    """Values normalisation could not map (map them with term-set or map)."""
    found = _run(lambda: _svc(data).unmapped(field_name=field_name, limit=limit))
    if not found:
        click.echo("nothing unmapped")
    for u in found:
        click.echo(f"{u['field']:<15} {u['problem']:<9} {u['hospital_code']:<10} "
                   f"seen {u['seen']:>5}  {u['value']}")


@recognition.command("history")
@data_option
@click.option("--entity", type=click.Choice(["item", "code_map", "term", "price"]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
def history(data: Path | None, entity: str | None, limit: int) -> None:
    """Who changed which rule, when (newest first)."""
    for c in _run(lambda: _svc(data).history(entity=entity, limit=limit)):
        click.echo(f"{c['id']:>6} {c['at']} {c['actor']:<16} {c['action']:<7} "
                   f"{c['entity']:<9} {c['key']}")


@recognition.command("classify")
@data_option
def classify(data: Path | None) -> None:
    """Classify every study not classified under the current rules (backfill)."""
    done = _run(lambda: _svc(data).classify_all())
    click.echo(f"classified {done} studies")


@recognition.command("check")
@data_option
@click.option("--hospital", required=True, help="The ordering hospital's code")
@click.option("--patient-id", default=None, help="The hospital's local patient ID")
@click.option("--national-id", default=None)
@click.option("--item", "item_code", default=None, help="Catalogue item code")
@click.option("--procedure-code", default=None, help="The hospital's own procedure code")
@click.option("--department", default="")
def check(data: Path | None, hospital: str, patient_id: str | None, national_id: str | None,
          item_code: str | None, procedure_code: str | None, department: str) -> None:
    """Run a check as the ordering hospital (audited like any other)."""
    from cloudfilm.services.recognition.service import CheckRequest

    result = _run(lambda: _svc(data).check(LOCAL_OPERATOR, CheckRequest(
        national_id=national_id, patient_id=patient_id, item_code=item_code,
        procedure_code=procedure_code, department=department, hospital_code=hospital)))
    click.echo(f"decision {result.decision_id}: {result.item_code} {result.item_name_zh}, "
               f"window {result.window_days} days, {len(result.priors)} prior(s)")
    for p in result.priors:
        click.echo(f"  {p.study_date} {p.hospital_code} ({p.hospital_level}) "
                   f"report {p.report_status}: {p.reason}")
    if result.not_offered:
        click.echo(f"  not offered: {result.not_offered}")


@recognition.command("decide")
@data_option
@click.argument("decision_id")
@click.argument("decision", type=click.Choice(["accepted", "repeat"]))
@click.option("--reason", type=click.Choice(REASONS), default=None)
@click.option("--text", default="")
def decide(data: Path | None, decision_id: str, decision: str, reason: str | None,
           text: str) -> None:
    """Record the decision of a check: accepted, or repeat with a reason."""
    _run(lambda: _svc(data).decide(LOCAL_OPERATOR, decision_id, decision,
                                   reason=reason or "", text=text))
    click.echo(f"{decision_id}: {decision}{f' ({reason})' if reason else ''}")


@recognition.command("performed")
@data_option
@click.argument("decision_id")
def performed(data: Path | None, decision_id: str) -> None:
    """Record that the exam of a check was performed (what an order feed reports)."""
    _run(lambda: _svc(data).performed(LOCAL_OPERATOR, decision_id))
    click.echo(f"{decision_id}: performed")


@recognition.command("savings")
@data_option
@click.option("--month", "months", multiple=True, help="YYYY-MM (repeatable)")
@click.option("--hospital", default=None)
@click.option("--csv", "as_csv", is_flag=True, help="CSV on standard output")
def savings(data: Path | None, months: tuple[str, ...], hospital: str | None,
            as_csv: bool) -> None:
    """Checks, prompts, decisions, repeats by reason, cost and dose avoided."""
    rows = _run(lambda: _svc(data).savings(LOCAL_OPERATOR, months=months,
                                           hospital_code=hospital))
    if as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["month", "hospital", "department", "item", "checks", "prompts",
                         "accepted", "accepted_then_performed", "undecided",
                         "cost_avoided_yuan", "dose_avoided_msv",
                         *[f"repeat_{r}" for r in REASONS]])
        for r in rows:
            writer.writerow([r.month, r.hospital_code, r.department, r.item_code, r.checks,
                             r.prompts, r.accepted, r.accepted_then_performed, r.undecided,
                             r.cost_avoided_yuan, r.dose_avoided_msv,
                             *[r.repeats.get(x, 0) for x in REASONS]])
        return
    if not rows:
        click.echo("no checks yet")
    for r in rows:
        repeats = ", ".join(f"{k} {v}" for k, v in sorted(r.repeats.items())) or "-"
        click.echo(f"{r.month} {r.hospital_code:<8} {r.department or '-':<12} {r.item_code:<12}"
                   f" checks {r.checks:>4} prompts {r.prompts:>4} accepted {r.accepted:>4} "
                   f"(performed anyway {r.accepted_then_performed}) repeats: {repeats}; "
                   f"avoided {r.cost_avoided_yuan:.0f} yuan, {r.dose_avoided_msv:.2f} mSv")
