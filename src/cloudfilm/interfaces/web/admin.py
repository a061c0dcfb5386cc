"""The operators' pages (``/admin``): an index other operator pages join through
:data:`SECTIONS`, and the exam mutual recognition rules (issue 15): the catalogue, each
hospital's procedure-code map, the values normalisation could not map (one click to map
them to what the administrator chooses, never a guess), the rules history and the figures.

Only platform administrators (and the local operator) sign in here; the staff sign-in page
is the workstation's. Every change goes through :class:`RecognitionService`, which checks
the permission again and appends the change to the rules history. Forms post with the
CSRF token; the browser-safety middleware checks their Origin.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from cloudfilm.interfaces.web.pages import Web, status_of
from cloudfilm.services.errors import CloudfilmError, InvalidInputError, NotFoundError
from cloudfilm.services.kernel.actor import Actor, Role
from cloudfilm.services.recognition.service import LEVELS, REPEAT_REASONS, ItemView

PREFIX = "/admin"
SIGNIN = "/workstation/signin"
ROLES = (Role.ADMIN, Role.OPERATOR)


@dataclass(frozen=True, slots=True)
class Section:
    """A link of the admin navigation: (group, path, label); labels are message ids."""

    group: str
    path: str
    label: str
    summary: str


# Other operator pages join the index and the side navigation by adding a line here.
SECTIONS: list[Section] = [
    Section("Mutual recognition", "/admin/recognition/items", "Catalogue",
            "Recognisable exam items: windows, hospital levels, quality conditions."),
    Section("Mutual recognition", "/admin/recognition/code-maps", "Procedure codes",
            "Each hospital's own procedure codes mapped to catalogue items."),
    Section("Mutual recognition", "/admin/recognition/unmapped", "Unmapped values",
            "Body parts, descriptions and codes that normalisation could not map."),
    Section("Mutual recognition", "/admin/recognition/history", "Change history",
            "Who changed which rule, and when."),
    Section("Mutual recognition", "/admin/recognition/figures", "Figures",
            "Checks, prompts, priors accepted, repeats, cost and dose avoided."),
]
REASON_LABELS = {
    "emergency": "Emergency", "condition_changed": "Condition changed",
    "prior_quality_insufficient": "Prior quality insufficient",
    "different_protocol": "Different protocol needed", "patient_request": "Patient request",
    "other": "Other",
}
LEVEL_LABELS = {"tertiary": "Tertiary", "secondary": "Secondary", "primary": "Primary"}
FIELD_LABELS = {"body_part": "Body part (DICOM)", "description": "Study description",
                "procedure_code": "Procedure code (DICOM)", "modality": "Modality",
                "order_code": "Hospital order code"}
_ITEM_FLAGS = ("require_final_report", "require_complete", "require_qc", "active")


def _item_form(form: dict[str, str]) -> dict[str, Any]:
    """The item's values from the edit form (checkboxes absent = off)."""
    values: dict[str, Any] = {k: form.get(k, "").strip() for k in
                              ("name_zh", "name_en", "modality", "body_region", "procedure")}
    try:
        values["window_days"] = int(form.get("window_days", ""))
        dose = form.get("typical_dose_msv", "").strip()
        values["typical_dose_msv"] = float(dose) if dose else None
    except ValueError:
        raise InvalidInputError("window_days and typical dose must be numbers") from None
    for flag in _ITEM_FLAGS:
        values[flag] = form.get(flag) == "on"
    values["accept_levels"] = {level: [other for other in LEVELS
                                       if form.get(f"accept_{level}_{other}") == "on"]
                               for level in LEVELS}
    return values


def _prices_form(form: dict[str, str]) -> dict[str, float]:
    """The item's price per hospital level (yuan); an empty field is left as it is."""
    prices = {}
    for level in LEVELS:
        text = form.get(f"price_{level}", "").strip()
        if text:
            try:
                prices[level] = float(text)
            except ValueError:
                raise InvalidInputError(f"price of {level}: a number of yuan") from None
    return prices


def _keyed(row: dict[str, Any]) -> dict[str, Any]:
    """The row with a short stable ``key`` for element ids."""
    text = f"{row.get('field')}|{row.get('value')}|{row.get('hospital_code')}"
    return {**row, "key": hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:12]}


def _changed(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, before, after) of the fields a change touched."""
    keys = [k for k in dict.fromkeys([*before, *after])
            if k not in ("updated_by",) and before.get(k) != after.get(k)]
    return [(k, before.get(k, ""), after.get(k, "")) for k in keys]


def build_router(web: Web) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    svc = web.services

    def admin(request: Request) -> Actor:
        return web.signed_in(request, ROLES, SIGNIN)

    def page(request: Request, template: str, actor: Actor, *, status: int = 200,
             **context: Any) -> Response:
        return web.render(request, template, status=status, actor=actor, sections=SECTIONS,
                          reason_labels=REASON_LABELS, level_labels=LEVEL_LABELS,
                          field_labels=FIELD_LABELS, **context)

    def back(path: str, **query: str) -> Response:
        return RedirectResponse(f"{path}?{urlencode(query)}" if query else path,
                                status_code=303)

    @router.get("")
    async def index(request: Request) -> Response:
        actor = admin(request)
        return page(request, "admin_index.html.j2", actor)

    # -- catalogue --

    @router.get("/recognition/items")
    async def items(request: Request) -> Response:
        actor = admin(request)
        found = await run_in_threadpool(svc.recognition.items)
        return page(request, "admin_items.html.j2", actor, items=found,
                    saved=request.query_params.get("saved", ""))

    def item_page(request: Request, actor: Actor, item: ItemView | None, *,
                  error: str | None = None, status: int = 200,
                  values: dict[str, Any] | None = None) -> Response:
        prices = {p["level"]: p["price_yuan"] for p in svc.recognition.prices()
                  if item is not None and p["item_code"] == item.code}
        return page(request, "admin_item.html.j2", actor, item=item, error=error,
                    status=status, levels=LEVELS, values=values, prices=prices,
                    regions=svc.recognition.regions())

    @router.get("/recognition/items/new")
    async def new_item(request: Request) -> Response:
        actor = admin(request)
        return await run_in_threadpool(item_page, request, actor, None)

    @router.get("/recognition/items/{code}")
    async def edit_item(request: Request, code: str) -> Response:
        actor = admin(request)
        found = {i.code: i for i in await run_in_threadpool(svc.recognition.items)}
        if code.upper() not in found:
            raise NotFoundError("no such item")
        return await run_in_threadpool(item_page, request, actor, found[code.upper()])

    @router.post("/recognition/items")
    async def save_item(request: Request) -> Response:
        actor = admin(request)
        form = await web.check_csrf(request)
        code = form.get("code", "").strip().upper()
        try:
            values = _item_form(form)
            prices = _prices_form(form)
            await run_in_threadpool(svc.recognition.put_item, actor, {**values, "code": code})
            for level, price in prices.items():
                await run_in_threadpool(svc.recognition.put_price, actor, code, level, price)
        except CloudfilmError as exc:
            found = await run_in_threadpool(svc.recognition.items)
            current = {i.code: i for i in found}.get(code)
            return await run_in_threadpool(
                item_page, request, actor, current, status=status_of(exc),
                error=f"{web.message(request, exc)} {exc.message}", values={**form})
        return back(f"{PREFIX}/recognition/items", saved=code)

    # -- hospital procedure-code maps --

    @router.get("/recognition/code-maps")
    async def code_maps(request: Request) -> Response:
        actor = admin(request)
        hospitals = await run_in_threadpool(svc.hospitals.list, actor=actor)
        chosen = request.query_params.get("hospital") or (hospitals[0].code if hospitals
                                                          else "")
        maps = (await run_in_threadpool(svc.recognition.code_maps, chosen)) if chosen else []
        items_ = await run_in_threadpool(svc.recognition.items)
        return page(request, "admin_code_maps.html.j2", actor, hospitals=hospitals,
                    chosen=chosen, maps=maps, items=items_,
                    saved=request.query_params.get("saved", ""), error=None)

    @router.post("/recognition/code-maps")
    async def save_code_map(request: Request) -> Response:
        actor = admin(request)
        form = await web.check_csrf(request)
        hospital = form.get("hospital", "")
        code = form.get("procedure_code", "").strip()
        item = form.get("item_code", "").strip() or None
        try:
            await run_in_threadpool(svc.recognition.put_code_map, actor, hospital, code,
                                    None if form.get("remove") else item)
        except CloudfilmError as exc:
            def context() -> dict[str, Any]:
                try:
                    maps = svc.recognition.code_maps(hospital) if hospital else []
                except NotFoundError:
                    maps = []
                return {"hospitals": svc.hospitals.list(actor=actor), "maps": maps,
                        "items": svc.recognition.items()}

            return page(request, "admin_code_maps.html.j2", actor, status=status_of(exc),
                        chosen=hospital, saved="",
                        error=f"{web.message(request, exc)} {exc.message}",
                        **await run_in_threadpool(context))
        return back(f"{PREFIX}/recognition/code-maps", hospital=hospital, saved=code)

    # -- unmapped values --

    def unmapped_context() -> dict[str, Any]:
        items_ = svc.recognition.items()
        return {"unmapped": [_keyed(r) for r in svc.recognition.unmapped(limit=500)],
                "regions": svc.recognition.regions(), "items": items_,
                "modalities": sorted({i.modality for i in items_})}

    @router.get("/recognition/unmapped")
    async def unmapped(request: Request) -> Response:
        actor = admin(request)
        context = await run_in_threadpool(unmapped_context)
        return page(request, "admin_unmapped.html.j2", actor, error=None, **context)

    @router.post("/recognition/unmapped/map")
    async def map_value(request: Request) -> Response:
        actor = admin(request)
        form = await web.check_csrf(request)
        entry = {k: form.get(k, "") for k in ("field", "value", "target", "hospital_code",
                                              "problem")}
        entry = _keyed(entry)
        htmx = bool(request.headers.get("hx-request"))
        try:
            await run_in_threadpool(svc.recognition.map_unmapped, actor, entry["field"],
                                    entry["value"], entry["target"])
        except CloudfilmError as exc:
            error = f"{web.message(request, exc)} {exc.message}"
            if htmx:
                return page(request, "admin_unmapped_row.html.j2", actor,
                            status=200, row=entry, done=False, error=error,
                            **await run_in_threadpool(unmapped_context))
            return page(request, "admin_unmapped.html.j2", actor, status=status_of(exc),
                        error=error, **await run_in_threadpool(unmapped_context))
        if htmx:  # the row says what it was mapped to
            return page(request, "admin_unmapped_row.html.j2", actor, row=entry, done=True,
                        error=None, regions=[], items=[], modalities=[])
        return back(f"{PREFIX}/recognition/unmapped")

    # -- history --

    @router.get("/recognition/history")
    async def history(request: Request) -> Response:
        actor = admin(request)
        entity = request.query_params.get("entity") or None
        if entity not in (None, "item", "code_map", "term", "price"):
            entity = None
        found = await run_in_threadpool(lambda: svc.recognition.history(entity=entity,
                                                                        limit=200))
        rows = [{**c, "at": datetime.fromisoformat(c["at"]),
                 "changes": _changed(c["before"], c["after"])} for c in found]
        return page(request, "admin_history.html.j2", actor, rows=rows, entity=entity or "")

    # -- figures --

    @router.get("/recognition/figures")
    async def figures(request: Request) -> Response:
        actor = admin(request)
        month = request.query_params.get("month", "")
        months = [month] if month else []
        try:
            rows = await run_in_threadpool(lambda: svc.recognition.savings(actor,
                                                                           months=months))
        except InvalidInputError:
            month, rows = "", await run_in_threadpool(lambda: svc.recognition.savings(actor))
        repeats: Counter[str] = Counter()
        for r in rows:
            repeats.update(r.repeats)
        totals = {
            "checks": sum(r.checks for r in rows), "prompts": sum(r.prompts for r in rows),
            "accepted": sum(r.accepted for r in rows),
            "performed": sum(r.accepted_then_performed for r in rows),
            "undecided": sum(r.undecided for r in rows),
            "repeats": sum(repeats.values()),
            "cost": round(sum(r.cost_avoided_yuan for r in rows), 2),
            "dose": round(sum(r.dose_avoided_msv for r in rows), 3)}
        this_month = datetime.now(UTC).astimezone(web.zone).strftime("%Y-%m")
        csv_query = urlencode({"format": "csv", **({"month": month} if month else {})})
        return page(request, "admin_figures.html.j2", actor, rows=rows, totals=totals,
                    repeats=repeats, month=month, this_month=this_month,
                    reasons=REPEAT_REASONS, csv_url=f"/api/v1/recognition/savings?{csv_query}")

    return router
