"""What the service-backed command groups share: the ``--data`` option, the services of the
configured platform, a service refusal as a one-line error, and JSON output."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cloudfilm.services.errors import CloudfilmError

data_option = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="Data folder of the embedded default [env CLOUDFILM_DATA_DIR]")


def services(data: Path | None) -> Any:
    """The platform's services (imported late: ``cloudfilm --help`` stays fast)."""
    from cloudfilm.app import build_services
    from cloudfilm.cli.main import _common, _settings

    return build_services(_settings(**_common(data)))


def run(call: Callable[[], Any]) -> Any:
    """``call()``, a service refusal becoming click's one-line error."""
    try:
        return call()
    except CloudfilmError as exc:
        raise click.ClickException(exc.message) from exc


def echo(value: Any) -> None:
    click.echo(json.dumps(value, default=str, ensure_ascii=False, indent=2))
