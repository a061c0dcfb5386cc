"""``cloudfilm gateway ...``: the hospital edge gateway (前置机), run inside a hospital.

Only :mod:`cloudfilm.gateway` is imported (lazily): the gateway talks to the cloud through
its public doors and needs none of the cloud's services, database or settings.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

config_argument = click.argument("config_path", metavar="CONFIG",
                                 type=click.Path(path_type=Path, dir_okay=False))


def _config(path: Path) -> Any:
    from cloudfilm.gateway.config import GatewayConfigError, load_config

    try:
        return load_config(path)
    except GatewayConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _logging(json: bool) -> None:
    import structlog

    shared: list[Any] = [structlog.stdlib.add_log_level,
                         structlog.processors.TimeStamper(fmt="iso", utc=True),
                         structlog.stdlib.ExtraAdder()]
    renderer: Any = (structlog.processors.JSONRenderer() if json
                     else structlog.dev.ConsoleRenderer(colors=False))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=shared))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("pynetdicom", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@click.group()
def gateway() -> None:
    """The hospital edge gateway: receive, queue durably, forward to the cloud."""


@gateway.command("check")
@config_argument
def check(config_path: Path) -> None:
    """Validate CONFIG and print what it configures."""
    config = _config(config_path)
    click.echo(f"{config_path}: OK; AE {config.dicom.ae_title} port {config.dicom.port}, "
               f"accepts {', '.join(config.dicom.allowed_ae_titles)}; queue in "
               f"{config.queue.folder}; cloud {config.cloud.url}")


@gateway.command("run")
@config_argument
@click.option("--json-logs", is_flag=True, help="Log JSON lines (for a log collector).")
def run(config_path: Path, json_logs: bool) -> None:
    """Run the gateway (DICOM, HL7 MLLP and folder doors, forwarding, status page)."""
    from cloudfilm.gateway.runner import Gateway

    config = _config(config_path)
    _logging(json_logs)
    gw = Gateway(config)
    try:
        gw.start()
    except OSError as exc:
        gw.stop()
        raise click.ClickException(f"cannot start the gateway: {exc}") from exc
    click.echo(f"cloudfilm gateway: {gw.describe()}", err=True)

    def _stop(signum: int, _frame: Any) -> None:
        threading.Thread(target=gw.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    gw.wait()


@gateway.command("status")
@config_argument
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def status(config_path: Path, as_json: bool) -> None:
    """Queue depth, oldest unsent object, send rate, parked objects, studies at risk."""
    from cloudfilm.gateway.runner import open_queue
    from cloudfilm.gateway.status import render_text, snapshot

    config = _config(config_path)
    queue = open_queue(config)
    try:
        snap = snapshot(queue, deadline_hours=config.forward.deadline_hours)
    finally:
        queue.close()
    click.echo(snap.as_json().decode() if as_json else render_text(snap))


@gateway.command("retry")
@config_argument
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "all_", is_flag=True, help="Every parked object.")
def retry(config_path: Path, ids: tuple[int, ...], all_: bool) -> None:
    """Send parked (refused) objects IDS again, after the cause was fixed."""
    from cloudfilm.gateway.runner import open_queue

    if not ids and not all_:
        raise click.UsageError("name the parked objects' ids (see `status`) or use --all")
    queue = open_queue(_config(config_path))
    try:
        n = queue.requeue_refused(None if all_ else list(ids))
    finally:
        queue.close()
    click.echo(f"{n} object(s) queued again")


if __name__ == "__main__":
    # ``python -m cloudfilm.cli.gateway``: the same commands without the cloud's CLI imports
    # (a gateway restarts in half the time).
    gateway()
