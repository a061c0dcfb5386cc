"""QIDO-RS (PS3.18 10.6): search studies, series and instances."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from cloudfilm.interfaces.api.auth import CurrentActor
from cloudfilm.interfaces.api.dicomweb.common import dicom_json, services
from cloudfilm.interfaces.api.dicomweb.media import parse_accept
from cloudfilm.interfaces.api.errors import HttpProblem
from cloudfilm.services.access.actor import Actor
from cloudfilm.services.archive.query import Level, parse_search

router = APIRouter()
_JSON_TYPES = {"application/dicom+json", "application/json", "*/*", "application/*"}


async def _search(request: Request, actor: Actor, level: Level, study: str | None = None,
                  series: str | None = None) -> Response:
    if not any(r.type in _JSON_TYPES for r in parse_accept(request.headers.get("accept"))):
        raise HttpProblem(406, "QIDO-RS answers application/dicom+json only", code="not-acceptable")
    svc = services(request)
    search = parse_search(level, request.query_params.multi_items(), study_uid=study,
                          series_uid=series, max_results=svc.limits.max_query_results)
    result = await run_in_threadpool(partial(svc.query.search, search, actor=actor))
    headers = {}
    if result.truncated:
        headers["Warning"] = ('299 cloudfilm "there are more matches than returned; '
                              'ask again with offset"')
    return dicom_json(request, result.matches, headers=headers)


@router.get("/studies", summary="QIDO-RS: search studies")
async def search_studies(request: Request, actor: CurrentActor) -> Response:
    return await _search(request, actor, "study")


@router.get("/series", summary="QIDO-RS: search series")
async def search_all_series(request: Request, actor: CurrentActor) -> Response:
    return await _search(request, actor, "series")


@router.get("/studies/{study}/series", summary="QIDO-RS: search a study's series")
async def search_series(request: Request, actor: CurrentActor, study: str) -> Response:
    return await _search(request, actor, "series", study)


@router.get("/instances", summary="QIDO-RS: search instances")
async def search_all_instances(request: Request, actor: CurrentActor) -> Response:
    return await _search(request, actor, "instance")


@router.get("/studies/{study}/instances", summary="QIDO-RS: search a study's instances")
async def search_study_instances(request: Request, actor: CurrentActor, study: str) -> Response:
    return await _search(request, actor, "instance", study)


@router.get("/studies/{study}/series/{series}/instances",
            summary="QIDO-RS: search a series' instances")
async def search_instances(request: Request, actor: CurrentActor, study: str,
                           series: str) -> Response:
    return await _search(request, actor, "instance", study, series)
