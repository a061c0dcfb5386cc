"""``cloudfilm research ...``: research projects, acting as the local operator (the embedded
platform's administrator) through the same service, rules and audit as the API."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

import click

from cloudfilm.cli.common import data_option
from cloudfilm.cli.common import echo as _echo
from cloudfilm.cli.common import run as _run
from cloudfilm.cli.common import services as _services
from cloudfilm.services.access.actor import LOCAL_OPERATOR


def _svc(data: Path | None) -> Any:
    return _services(data).research


@click.group()
def research() -> None:
    """De-identified research projects: propose, approve, count, export."""


@research.command("list")
@data_option
def list_projects(data: Path | None) -> None:
    """Research projects."""
    _echo([asdict(p) for p in _run(lambda: _svc(data).projects(LOCAL_OPERATOR))])


@research.command("propose")
@data_option
@click.option("--title", required=True)
@click.option("--pi", "pi", required=True, help="Principal investigator")
@click.option("--institution", required=True)
@click.option("--ethics-ref", required=True)
@click.option("--ethics-expires", required=True, type=click.DateTime(["%Y-%m-%d"]))
@click.option("--options", "options_json", default="{}",
              help='De-identification options as JSON, e.g. {"retain_modified_dates": true}')
@click.option("--modality", multiple=True)
@click.option("--body-part", multiple=True)
@click.option("--date-from", default="")
@click.option("--date-to", default="")
@click.option("--age-min", type=int)
@click.option("--age-max", type=int)
@click.option("--sex", default="", type=click.Choice(["", "M", "F", "O"]))
@click.option("--hospital-level", multiple=True)
@click.option("--report-term", multiple=True)
def propose(data: Path | None, title: str, pi: str, institution: str, ethics_ref: str,
            ethics_expires: Any, options_json: str, modality: tuple[str, ...],
            body_part: tuple[str, ...], date_from: str, date_to: str, age_min: int | None,
            age_max: int | None, sex: str, hospital_level: tuple[str, ...],
            report_term: tuple[str, ...]) -> None:
    """Propose a project (counts only until an administrator approves it)."""
    from cloudfilm.services.research.service import Cohort, ProjectInput

    try:
        options = json.loads(options_json)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--options") from exc
    expires: date = ethics_expires.date()
    cohort = Cohort(modalities=modality, body_parts=body_part, date_from=date_from,
                    date_to=date_to, age_min=age_min, age_max=age_max, sex=sex,
                    hospital_levels=hospital_level, report_terms=report_term)
    view = _run(lambda: _svc(data).propose(LOCAL_OPERATOR, ProjectInput(
        title=title, principal_investigator=pi, institution=institution,
        ethics_reference=ethics_ref, ethics_expires=expires, options=options,
        cohort=cohort)))
    _echo(asdict(view))


@research.command("approve")
@data_option
@click.argument("project_id")
def approve(data: Path | None, project_id: str) -> None:
    """Approve a project (platform administrator)."""
    _echo(asdict(_run(lambda: _svc(data).approve(LOCAL_OPERATOR, project_id))))


@research.command("counts")
@data_option
@click.argument("project_id")
def counts(data: Path | None, project_id: str) -> None:
    """Cohort counts ("< k" below the threshold until approved)."""
    _echo(asdict(_run(lambda: _svc(data).counts(LOCAL_OPERATOR, project_id))))


@research.command("export")
@data_option
@click.argument("project_id")
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--resume-after", default="", metavar="SOP_UID",
              help="Go on after this object (the last one of an interrupted export)")
def export(data: Path | None, project_id: str, out: Path, resume_after: str) -> None:
    """Write the project's de-identified zip to OUT (streamed to disk)."""
    from cloudfilm.services.research.service import ExportSummary

    summary = ExportSummary()
    stream = _run(lambda: _svc(data).export(LOCAL_OPERATOR, project_id, summary,
                                            resume_after=resume_after))
    partial = out.with_name(out.name + ".partial")
    with partial.open("wb") as fh:
        for chunk in stream:
            fh.write(chunk)
    partial.replace(out)
    _echo(asdict(summary))


@research.command("export-to")
@data_option
@click.argument("project_id")
@click.argument("target")
def export_to(data: Path | None, project_id: str, target: str) -> None:
    """Export the project's de-identified files into an object-store prefix (TARGET:
    ``s3://bucket/prefix?endpoint_url=...``, or a folder). Run it again to resume: files
    already there are not sent again."""
    from cloudfilm.infrastructure.storage.factory import open_blob_store

    try:
        store = open_blob_store(target, data_dir=Path.cwd())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="TARGET") from None
    _echo(asdict(_run(lambda: _svc(data).export_to_store(LOCAL_OPERATOR, project_id, store))))
