"""``cloudfilm ai ...``: AI algorithms and their worklist, acting as the local operator (the
embedded platform's administrator) through the same services, rules and audit as the API."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from cloudfilm.cli.common import data_option
from cloudfilm.cli.common import echo as _echo
from cloudfilm.cli.common import run as _run
from cloudfilm.cli.common import services as _services
from cloudfilm.services.access.actor import LOCAL_OPERATOR


def _ai(data: Path | None) -> Any:
    return _services(data).ai


@click.group()
def ai() -> None:
    """AI assistance: algorithms, their approval and hospitals, the UPS worklist."""


@ai.command("list")
@data_option
def list_algorithms(data: Path | None) -> None:
    """AI algorithms, their status and the hospitals that run them."""
    _echo([asdict(v) for v in _run(lambda: _ai(data).registry.list(LOCAL_OPERATOR))])


@ai.command("register")
@data_option
@click.option("--name", required=True)
@click.option("--version", "version_", required=True)
@click.option("--intended-use", required=True, help="What it is for, and what it is not")
@click.option("--kind", type=click.Choice(["plugin", "external"]), required=True)
@click.option("--vendor", default="")
@click.option("--plugin", default="",
              help="builtin:lung-nodules, entry:<name> or a name configured in ai.plugins")
@click.option("--modality", multiple=True, help="Run on studies with this modality (CT...)")
@click.option("--body-part", multiple=True, help="... and this body part (CHEST...)")
@click.option("--input", "input_", type=click.Choice(["original", "deidentified"]),
              default="original", show_default=True,
              help="What the approval lets it read")
def register(data: Path | None, name: str, version_: str, intended_use: str, kind: str,
             vendor: str, plugin: str, modality: tuple[str, ...],
             body_part: tuple[str, ...], input_: str) -> None:
    """Register an algorithm (an external engine's credential is printed once)."""
    from cloudfilm.services.ai.registry import AlgorithmInput

    view, token = _run(lambda: _ai(data).registry.register(LOCAL_OPERATOR, AlgorithmInput(
        name=name, version=version_, intended_use=intended_use, kind=kind,  # type: ignore[arg-type]
        vendor=vendor, plugin=plugin, modalities=modality, body_parts=body_part,
        input=input_)))  # type: ignore[arg-type]
    out = asdict(view)
    if token:
        out["credential"] = token
    _echo(out)


@ai.command("approve")
@data_option
@click.argument("algorithm_id")
def approve(data: Path | None, algorithm_id: str) -> None:
    """Approve an algorithm for use (platform administrator)."""
    _echo(asdict(_run(lambda: _ai(data).registry.approve(LOCAL_OPERATOR, algorithm_id))))


@ai.command("suspend")
@data_option
@click.argument("algorithm_id")
def suspend(data: Path | None, algorithm_id: str) -> None:
    """Suspend an algorithm: no new work, no claims, no reads."""
    _echo(asdict(_run(lambda: _ai(data).registry.suspend(LOCAL_OPERATOR, algorithm_id))))


@ai.command("enable")
@data_option
@click.argument("algorithm_id")
@click.argument("hospital")
@click.option("--off", is_flag=True, help="Disable instead")
def enable(data: Path | None, algorithm_id: str, hospital: str, off: bool) -> None:
    """Run an approved algorithm on a hospital's new studies (or stop: --off)."""
    _echo(asdict(_run(lambda: _ai(data).registry.enable(LOCAL_OPERATOR, algorithm_id,
                                                         hospital, not off))))


@ai.command("worklist")
@data_option
@click.option("--state", multiple=True,
              type=click.Choice(["SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"]))
@click.option("--limit", default=100, show_default=True)
def worklist(data: Path | None, state: tuple[str, ...], limit: int) -> None:
    """The UPS workitems (what /dicomweb/workitems serves)."""
    _echo([asdict(w) for w in _run(lambda: _ai(data).work.search(
        LOCAL_OPERATOR, states=state, limit=limit))])


@ai.command("run")
@data_option
def run(data: Path | None) -> None:
    """Schedule the studies that are due and run in-process plug-ins here, then exit."""
    _echo(_run(lambda: _ai(data).work.run_pending()))


@ai.command("results")
@data_option
@click.argument("study_uid")
def results(data: Path | None, study_uid: str) -> None:
    """The AI results of a study (AI-generated; doctors confirm them)."""
    _echo([asdict(r) for r in _run(lambda: _ai(data).work.results(LOCAL_OPERATOR,
                                                                   study_uid))])


@ai.command("rerun")
@data_option
@click.argument("algorithm_id")
@click.argument("study_uid")
def rerun(data: Path | None, algorithm_id: str, study_uid: str) -> None:
    """Run an algorithm again on a study: a new workitem whose results become a new
    version (the earlier one is kept, marked superseded). In-process plug-ins run here."""
    work = _ai(data).work
    item = _run(lambda: work.create(LOCAL_OPERATOR, algorithm_id, study_uid))
    out = asdict(item)
    with_results = _run(lambda: work.run(item.uid))
    out["state"] = with_results
    _echo(out)
