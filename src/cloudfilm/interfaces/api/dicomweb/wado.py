"""WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data, rendered and thumbnails.

Whole objects stream from the blob store part by part; a 2 GB study never sits in memory.
Content negotiation is honest: what cannot be produced is answered 406, never substituted.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from cloudfilm.interfaces.api.auth import CurrentActor
from cloudfilm.interfaces.api.dicomweb.common import dicom_json, services
from cloudfilm.interfaces.api.dicomweb.media import (
    MediaRange,
    multipart_stream,
    new_boundary,
    parse_accept,
)
from cloudfilm.interfaces.api.errors import HttpProblem
from cloudfilm.services.access.actor import Actor
from cloudfilm.services.archive.retrieve import RetrieveService, StoredObject

router = APIRouter()

_RENDERED_TYPES = ("image/jpeg", "image/png", "image/gif")


def _dicom_syntax(accept: list[MediaRange]) -> str | None:
    """The transfer syntax asked for whole objects (None: as stored), or 406."""
    for media in accept:
        if media.type == "multipart/related":
            part = media.params.get("type", "application/dicom").lower()
            if part in ("application/dicom", "*/*", "*"):
                return media.params.get("transfer-syntax")
        elif media.type in ("*/*", "multipart/*", "application/dicom"):
            return media.params.get("transfer-syntax")
    raise HttpProblem(406, 'objects are sent as multipart/related; type="application/dicom"'
                      " (optionally with transfer-syntax=*)", code="not-acceptable")


def _stream_objects(retrieve: RetrieveService, objects: list[StoredObject],
                    syntax: str | None) -> StreamingResponse:
    boundary = new_boundary()

    def parts() -> Iterator[tuple[str, Iterator[bytes]]]:
        for obj in objects:
            ts = retrieve.served_syntax(obj, syntax)
            yield (f"application/dicom; transfer-syntax={ts}",
                   retrieve.object_chunks(obj, syntax))

    media = f'multipart/related; type="application/dicom"; boundary={boundary}'
    # Some objects come from the cold tier (slower to start: an object store, another
    # disk): said so, per the issue, for clients that time their requests.
    cold = sum(1 for obj in objects if obj.storage_tier == "cold")
    headers = {"X-Cloudfilm-Storage-Tier": "cold" if cold == len(objects) else
               "mixed" if cold else "hot"}
    return StreamingResponse(multipart_stream(boundary, parts()), media_type=media,
                             headers=headers)


async def _retrieve(request: Request, actor: Actor, study: str, series: str | None = None,
                    instance: str | None = None) -> StreamingResponse:
    syntax = _dicom_syntax(parse_accept(request.headers.get("accept")))
    retrieve = services(request).retrieve
    objects = await run_in_threadpool(partial(retrieve.locate, study, series, instance,
                                              actor=actor))
    retrieve.check_transfer_syntax(objects, syntax)
    return _stream_objects(retrieve, objects, syntax)


@router.get("/studies/{study}", summary="WADO-RS: retrieve a study")
async def retrieve_study(request: Request, actor: CurrentActor,
                         study: str) -> StreamingResponse:
    return await _retrieve(request, actor, study)


@router.get("/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series")
async def retrieve_series(request: Request, actor: CurrentActor, study: str,
                          series: str) -> StreamingResponse:
    return await _retrieve(request, actor, study, series)


@router.get("/studies/{study}/series/{series}/instances/{instance}",
            summary="WADO-RS: retrieve an instance")
async def retrieve_instance(request: Request, actor: CurrentActor, study: str, series: str,
                            instance: str) -> StreamingResponse:
    return await _retrieve(request, actor, study, series, instance)


# -- metadata --------------------------------------------------------------------------------


async def _metadata(request: Request, actor: Actor, study: str, series: str | None = None,
                    instance: str | None = None) -> Response:
    accept = parse_accept(request.headers.get("accept"))
    if not any(m.type in ("application/dicom+json", "application/json", "*/*", "application/*")
               for m in accept):
        raise HttpProblem(406, "metadata is sent as application/dicom+json", code="not-acceptable")
    body = await run_in_threadpool(partial(services(request).retrieve.metadata, study, series,
                                           instance, actor=actor))
    return dicom_json(request, body)


@router.get("/studies/{study}/metadata", summary="WADO-RS: study metadata")
async def study_metadata(request: Request, actor: CurrentActor, study: str) -> Response:
    return await _metadata(request, actor, study)


@router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: series metadata")
async def series_metadata(request: Request, actor: CurrentActor, study: str,
                          series: str) -> Response:
    return await _metadata(request, actor, study, series)


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata",
            summary="WADO-RS: instance metadata")
async def instance_metadata(request: Request, actor: CurrentActor, study: str, series: str,
                            instance: str) -> Response:
    return await _metadata(request, actor, study, series, instance)


# -- frames and bulk data ----------------------------------------------------------------------


def _frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        numbers = []
    if not numbers or any(n < 1 for n in numbers):
        raise HttpProblem(400, f"frame list {text!r} must be frame numbers from 1, comma "
                          "separated (e.g. 1,2,3)", code="bad-frame-list")
    return numbers


def _frame_syntax(accept: list[MediaRange]) -> tuple[str | None, str | None]:
    """(transfer syntax wanted, compressed media type wanted) for frames, or 406."""
    for media in accept:
        if media.type == "multipart/related":
            part = media.params.get("type", "application/octet-stream").lower()
            ts = media.params.get("transfer-syntax")
            if part in ("*/*", "*", "image/*"):
                return "*", None  # any representation: send what is stored, cheapest
            if part == "application/octet-stream":
                return (ts if ts == "*" else None), None
            return (ts or "*"), part
        if media.type in ("*/*", "multipart/*", "application/octet-stream"):
            return None, None
    raise HttpProblem(406, 'frames are sent as multipart/related; type="application/'
                      'octet-stream" (or the stored image media type)', code="not-acceptable")


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            summary="WADO-RS: retrieve frames")
async def retrieve_frames(request: Request, actor: CurrentActor, study: str, series: str,
                          instance: str, frames: str) -> Response:
    numbers = _frame_numbers(frames)
    syntax, wanted_media = _frame_syntax(parse_accept(request.headers.get("accept")))
    retrieve = services(request).retrieve
    found = await run_in_threadpool(partial(retrieve.frames, study, series, instance, numbers,
                                            syntax, actor=actor))
    if wanted_media is not None and any(f.media_type != wanted_media for f in found):
        raise HttpProblem(406, f"frames of this instance are {found[0].media_type}, not "
                          f"{wanted_media}", code="not-acceptable")
    boundary = new_boundary()
    body = b"".join(multipart_stream(boundary, (
        (f"{f.media_type}; transfer-syntax={f.transfer_syntax_uid}", [f.data]) for f in found)))
    media = f'multipart/related; type="{found[0].media_type}"; boundary={boundary}'
    return Response(body, media_type=media)


@router.get("/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag:path}",
            summary="WADO-RS: retrieve bulk data of one attribute")
async def retrieve_bulkdata(request: Request, actor: CurrentActor, study: str, series: str,
                            instance: str, tag: str) -> Response:
    retrieve = services(request).retrieve
    if tag.upper() in ("7FE00010", "7FE00008", "7FE00009"):
        found = await run_in_threadpool(partial(retrieve.frames, study, series, instance, None,
                                                "*", actor=actor))
        data = [f.data for f in found]
        media_type = found[0].media_type
    else:
        data = [await run_in_threadpool(partial(retrieve.bulkdata, study, series, instance, tag,
                                                actor=actor))]
        media_type = "application/octet-stream"
    boundary = new_boundary()
    body = b"".join(multipart_stream(boundary, ((media_type, [d]) for d in data)))
    return Response(body, media_type=f'multipart/related; type="{media_type}"; '
                    f"boundary={boundary}")


# -- rendered and thumbnail --------------------------------------------------------------------


def _rendered_type(request: Request) -> str:
    for media in parse_accept(request.headers.get("accept")):
        if media.type in _RENDERED_TYPES:
            return media.type
        if media.type in ("*/*", "image/*"):
            return "image/jpeg"
    raise HttpProblem(406, "rendered images are image/jpeg, image/png or image/gif",
                      code="not-acceptable")


def rendering_options(params: dict[str, str]) -> dict[str, object]:
    """Parse the ``window``, ``viewport`` and ``quality`` query parameters (PS3.18 8.3.5)."""
    options: dict[str, object] = {}
    try:
        if params.get("window"):
            center, width, *function = params["window"].split(",")
            options["window"] = (float(center), float(width),
                                 (function[0] if function else "linear").lower())
        if params.get("viewport"):
            vw, vh, *_ = params["viewport"].split(",")
            options["viewport"] = (int(vw), int(vh))
        if params.get("quality"):
            quality = int(params["quality"])
            if not 1 <= quality <= 100:
                raise ValueError
            options["quality"] = quality
    except ValueError:
        raise HttpProblem(400, "window is center,width[,function]; viewport is width,height; "
                          "quality is 1-100", code="bad-rendering-parameter") from None
    return options


async def _render(request: Request, actor: Actor, study: str, series: str, instance: str,
                  frame: int = 1, *, thumbnail: bool = False) -> Response:
    media_type = _rendered_type(request)
    options = rendering_options(dict(request.query_params))
    if thumbnail:
        options.setdefault("viewport", (128, 128))
    data = await run_in_threadpool(partial(
        services(request).retrieve.rendered, study, series, instance, actor=actor, frame=frame,
        media_type=media_type, **cast(dict[str, Any], options)))
    return Response(data, media_type=media_type)


@router.get("/studies/{study}/series/{series}/instances/{instance}/rendered",
            summary="WADO-RS: rendered instance")
async def rendered_instance(request: Request, actor: CurrentActor, study: str, series: str,
                            instance: str) -> Response:
    return await _render(request, actor, study, series, instance)


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered",
            summary="WADO-RS: rendered frame")
async def rendered_frame(request: Request, actor: CurrentActor, study: str, series: str,
                         instance: str, frame: int) -> Response:
    return await _render(request, actor, study, series, instance, frame)


@router.get("/studies/{study}/series/{series}/instances/{instance}/thumbnail",
            summary="WADO-RS: instance thumbnail")
async def thumbnail(request: Request, actor: CurrentActor, study: str, series: str,
                    instance: str) -> Response:
    return await _render(request, actor, study, series, instance, thumbnail=True)
