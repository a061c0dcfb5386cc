"""The health commission's dashboard (``/dashboard``): headline numbers, the 12-hour rule,
late and silent hospitals, volume, use, mutual recognition, storage; for a desk screen.

Signed-in platform administrators see the province, a health bureau its area, a hospital
administrator its own hospital with the province's averages. The page calls the stats
service (which checks the scope and audits the read) and hands the chart figures to its
module script as JSON; every table can be downloaded as CSV or XLSX from ``/api/v1/stats``.
The late-study list links a study only for whom may open it (the viewer decides again).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from cloudfilm.interfaces.web.pages import Web
from cloudfilm.services.errors import NotFoundError
from cloudfilm.services.kernel.actor import Role
from cloudfilm.services.stats.figures import PERIODS, Table

PREFIX = "/dashboard"
SIGNIN = "/workstation/signin"
ROLES = (Role.ADMIN, Role.HEALTH_BUREAU, Role.HOSPITAL_ADMIN)
# Where a late study opens: the workstation's diagnostic viewer (doctors; the access
# policy decides again there, and records the read).
STUDY_LINK = "/workstation/viewer?study={uid}"
PAGE_TABLES = ("headline", "coverage", "silent", "timeliness", "trend", "late", "volume",
               "use", "pairs", "recognition", "storage", "alerts")
USE_METRICS = ("resident_sign_in", "resident_view", "doctor_view", "download",
               "grant_requested", "grant_active", "grant_denied", "grant_expired",
               "grant_mode:break_glass")


def _every_day(days: list[str]) -> list[str]:
    """Every day from the first to the last given (a day without studies is a zero on the
    chart, not a missing bar)."""
    if not days:
        return []
    first, last = date.fromisoformat(min(days)), date.fromisoformat(max(days))
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _charts(tables: dict[str, Table], _: Any) -> dict[str, Any]:
    """What each chart draws (labels translated here, numbers only, no patient data)."""
    known = {r["day"]: r for r in tables["trend"].dicts()}
    empty = {"late": 0, "on_time": 0, "on_time_share": None}
    trend = [{"day": d, **known.get(d, empty)} for d in _every_day(list(known))]
    by_day: dict[str, dict[str, int]] = defaultdict(dict)
    modalities: list[str] = []
    for r in tables["volume"].dicts():
        by_day[r["day"]][r["modality"]] = r["studies"]
        if r["modality"] not in modalities:
            modalities.append(r["modality"])
    days = _every_day(list(by_day))
    ranked = [r for r in tables["timeliness"].dicts() if r["late_share"]][:12]
    use = dict(tables["use"].rows)
    cumulative = [(p, v) for p, f, v in tables["storage"].rows if f == "bytes_cumulative"]
    return {
        "trend": {"kind": "trend", "days": [r["day"][5:] for r in trend],
                  "late": [r["late"] for r in trend], "on_time": [r["on_time"] for r in trend],
                  "share": [round(100 * r["on_time_share"], 1) if r["on_time_share"] is not None
                            else None for r in trend],
                  "labels": {"studies": _("Studies"), "late": _("Late"),
                             "on_time": _("On time"), "share": _("On time (%)")}},
        "volume": {"kind": "stacked", "x": [d[5:] for d in days],
                   "series": [{"name": m, "data": [by_day[d].get(m, 0) for d in days]}
                              for m in modalities]},
        "ranking": {"kind": "ranking", "label": _("Late share (%)"),
                    "names": [r["hospital_name"] for r in ranked],
                    "values": [round(100 * r["late_share"], 1) for r in ranked]},
        "use": {"kind": "bars", "label": _("Count"),
                "names": [_(_METRIC_LABELS[m]) for m in USE_METRICS],
                "values": [use.get(m, 0) for m in USE_METRICS]},
        "storage": {"kind": "line", "label": _("Stored (GB)"), "unit": "GB",
                    "x": [p for p, _v in cumulative],
                    "values": [round(v / 1e9, 3) for _p, v in cumulative]},
    }


_METRIC_LABELS = {
    "resident_sign_in": "Resident sign-ins", "resident_view": "Studies viewed by residents",
    "doctor_view": "Studies viewed by doctors", "download": "Downloads",
    "grant_requested": "Grant requests", "grant_active": "Grants approved",
    "grant_denied": "Grants denied", "grant_expired": "Grants expired",
    "grant_mode:break_glass": "Break-glass",
}


def build_router(web: Web) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    @router.get("")
    async def dashboard(request: Request) -> Response:
        actor = await run_in_threadpool(web.signed_in, request, ROLES, SIGNIN)
        days = request.query_params.get("days", "30")
        if not days.isdigit() or int(days) not in PERIODS:
            raise NotFoundError("days: 7, 30, 90 or 365")
        stats = web.services.stats
        if stats is None:
            raise NotFoundError("the dashboard is not enabled")
        tables = await run_in_threadpool(stats.tables, actor, PAGE_TABLES, days=int(days))
        _ = web.languages.translations[web.lang(request)].gettext
        head = dict(tables["headline"].rows)
        late_hospitals = [r for r in tables["timeliness"].dicts()
                          if (r["late_share"] or 0) > stats.options.late_alert_share][:15]
        return web.render(
            request, "dash_index.html.j2", tables=tables, head=head, days=int(days),
            periods=PERIODS, charts=_charts(tables, _), late_hospitals=late_hospitals,
            scope=tables["headline"].scope, study_link=STUDY_LINK, metric_labels=_METRIC_LABELS,
            pairs=tables["pairs"].dicts()[:15], late=tables["late"].dicts()[:12],
            silent=tables["silent"].dicts(), alerts=tables["alerts"].dicts()[:15],
            coverage=tables["coverage"].dicts(), use=dict(tables["use"].rows),
            recognition=dict(tables["recognition"].rows),
            storage={f: v for p, f, v in tables["storage"].rows if p in ("summary",
                                                                         "projection")})

    return router
