"""REST API of the commission's dashboard (``/api/v1/stats``): every figure the page shows,
as JSON, CSV or XLSX (``?format=``), for the caller's scope (province, a health bureau's
area, a hospital). The service checks and audits each read."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from cloudfilm.interfaces.api.auth import CurrentActor
from cloudfilm.services.container import Services
from cloudfilm.services.errors import NotFoundError
from cloudfilm.services.stats.figures import StatsService, Table

PREFIX = "/api/v1/stats"
router = APIRouter()
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _stats(request: Request) -> StatsService:
    services: Services = request.app.state.services
    if services.stats is None:
        raise NotFoundError("the dashboard is not enabled on this platform")
    return services.stats


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def to_csv(table: Table) -> bytes:
    """UTF-8 with a byte-order mark, so that Excel in a Chinese locale opens it right."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow(["" if v is None else _cell(v) for v in row])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def to_xlsx(tables: list[Table]) -> bytes:
    """One worksheet per table (openpyxl, write-only: constant memory)."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    for table in tables:
        sheet = book.create_sheet(title=table.name[:31])
        sheet.append(list(table.columns))
        for row in table.rows:
            sheet.append([v.replace(tzinfo=None) if isinstance(v, datetime) else v
                          for v in row])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def answer(tables: list[Table], fmt: str, filename: str) -> Response:
    if fmt == "csv":
        return Response(to_csv(tables[0]), media_type="text/csv; charset=utf-8", headers={
            "content-disposition": f'attachment; filename="{filename}.csv"'})
    if fmt == "xlsx":
        return Response(to_xlsx(tables), media_type=XLSX, headers={
            "content-disposition": f'attachment; filename="{filename}.xlsx"'})
    body = {t.name: {"scope": t.scope, "columns": list(t.columns),
                     "rows": [[_cell(v) for v in r] for r in t.rows]} for t in tables}
    return JSONResponse(body if len(tables) > 1 else body[tables[0].name])


@router.get("", summary="Every dashboard figure at once (JSON, or one XLSX workbook)")
async def all_tables(request: Request, actor: CurrentActor, days: int = 30,
                     format: Literal["json", "xlsx"] = "json") -> Response:
    svc = _stats(request)
    found = await run_in_threadpool(svc.tables, actor, svc.TABLES, days=days)
    return answer(list(found.values()), format, f"cloudfilm-dashboard-{days}d")


@router.get("/{name}", summary="One dashboard figure (headline, coverage, silent, "
            "timeliness, trend, late, volume, volume_hospitals, use, pairs, recognition, "
            "storage, alerts) as JSON, CSV or XLSX")
async def one_table(request: Request, name: str, actor: CurrentActor, days: int = 30,
                    format: Literal["json", "csv", "xlsx"] = "json") -> Response:
    svc = _stats(request)
    table = await run_in_threadpool(svc.table, actor, name, days=days)
    return answer([table], format, f"cloudfilm-{name}-{days}d")
