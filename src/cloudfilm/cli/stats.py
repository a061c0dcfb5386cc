"""``cloudfilm stats ...``: the commission's dashboard figures in a terminal, and the
rollup (run it from cron if ``serve`` is not running), as the local operator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.errors import CloudfilmError

data_option = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="Data folder of the embedded default [env CLOUDFILM_DATA_DIR]")
TABLES = ("headline", "coverage", "silent", "timeliness", "trend", "late", "volume",
          "volume_hospitals", "use", "pairs", "recognition", "storage", "alerts")


def _stats(data: Path | None) -> Any:
    from cloudfilm.app import build_services
    from cloudfilm.cli.main import _common, _settings

    services = build_services(_settings(**_common(data)))
    if services.stats is None:
        raise click.ClickException("the dashboard is not enabled")
    return services.stats


@click.group()
def stats() -> None:
    """The commission's dashboard: coverage, the 12-hour rule, use, storage; the rollup."""


@stats.command("rollup")
@data_option
@click.option("--full", is_flag=True, help="Recompute every day, not only changed ones.")
def stats_rollup(data: Path | None, full: bool) -> None:
    """Roll the days changed since the last run into the daily tables; open alerts."""
    try:
        result = _stats(data).rollup.run(full=full)
    except CloudfilmError as exc:
        raise click.ClickException(exc.message) from exc
    span = f" ({result.days[0]} .. {result.days[-1]})" if result.days else ""
    click.echo(f"rolled {len(result.days)} day(s){span}, opened {result.alerts} alert(s) "
               f"in {result.seconds:.2f} s")


@stats.command("show")
@data_option
@click.argument("name", type=click.Choice(TABLES), default="headline")
@click.option("--days", type=click.Choice(["7", "30", "90", "365"]), default="30",
              show_default=True)
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of aligned columns.")
def stats_show(data: Path | None, name: str, days: str, as_csv: bool) -> None:
    """Print one dashboard table (the same rows as /api/v1/stats/NAME)."""
    try:
        table = _stats(data).table(LOCAL_OPERATOR, name, days=int(days))
    except CloudfilmError as exc:
        raise click.ClickException(exc.message) from exc
    if as_csv:
        from cloudfilm.interfaces.api.rest.stats import to_csv

        click.echo(to_csv(table).decode("utf-8-sig"), nl=False)
        return
    cells = [list(table.columns)] + [["" if v is None else str(v) for v in r]
                                     for r in table.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.columns))]
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
