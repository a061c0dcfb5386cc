"""UPS-RS subscriptions and the event channel (PS3.18 11.10-11.11).

- ``POST   /workitems/{uid}/subscribers/{AETitle}`` subscribe to one workitem, or with
  ``uid`` 1.2.840.10008.5.1.4.34.5 to all of the algorithm's workitems (global);
- ``POST   /workitems/1.2.840.10008.5.1.4.34.5/subscribers/{AETitle}/suspend`` suspend
  the global subscription;
- ``DELETE /workitems/{uid}/subscribers/{AETitle}`` unsubscribe;
- ``WS     /subscribers/{AETitle}`` the event channel: UPS State Reports as DICOM JSON.

Only an AI algorithm's credential subscribes, to its own workitems only; the channel
carries reports about those only. Reports reach the channels open on the process where the
change happened (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from cloudfilm.interfaces.api.auth import CurrentActor, authenticate
from cloudfilm.interfaces.api.dicomweb.common import services
from cloudfilm.interfaces.api.errors import HttpProblem
from cloudfilm.services.ai.subscriptions import GLOBAL, UpsEvents
from cloudfilm.services.errors import CloudfilmError

router = APIRouter()


def _events(request: Request | WebSocket) -> UpsEvents:
    ai = services(request).ai  # type: ignore[arg-type]
    if ai is None:
        raise HttpProblem(404, "AI assistance is not enabled", code="not-found")
    return ai.events


@router.post("/workitems/{uid}/subscribers/{ae_title}", status_code=201,
             summary="UPS-RS subscribe (one workitem, or all with the global UID)")
async def subscribe(request: Request, uid: str, ae_title: str,
                    actor: CurrentActor) -> Response:
    await run_in_threadpool(_events(request).subscribe, actor, ae_title, uid)
    return Response(status_code=201)


@router.post(f"/workitems/{GLOBAL}/subscribers/{{ae_title}}/suspend",
             summary="UPS-RS suspend the global subscription")
async def suspend(request: Request, ae_title: str, actor: CurrentActor) -> Response:
    await run_in_threadpool(_events(request).suspend, actor, ae_title)
    return Response(status_code=200)


@router.delete("/workitems/{uid}/subscribers/{ae_title}", summary="UPS-RS unsubscribe")
async def unsubscribe(request: Request, uid: str, ae_title: str,
                      actor: CurrentActor) -> Response:
    await run_in_threadpool(_events(request).unsubscribe, actor, ae_title, uid)
    return Response(status_code=200)


@router.websocket("/subscribers/{ae_title}")
async def channel(websocket: WebSocket, ae_title: str) -> None:
    """The event channel of an AE title (PS3.18 11.11): one DICOM JSON report a message."""
    try:
        actor = await authenticate(websocket)  # type: ignore[arg-type]
        events = _events(websocket)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)

        def send(body: dict[str, Any]) -> None:  # from any thread
            loop.call_soon_threadsafe(_offer, queue, body)

        close = await run_in_threadpool(events.open_channel, actor, ae_title, send)
    except (CloudfilmError, HttpProblem):
        await websocket.close(code=1008)  # policy violation: not an allowed subscriber
        return
    await websocket.accept()
    try:
        receiving = asyncio.ensure_future(websocket.receive())
        while True:
            getting = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({receiving, getting},
                                         return_when=asyncio.FIRST_COMPLETED)
            if receiving in done:
                getting.cancel()
                if receiving.result().get("type") == "websocket.disconnect":
                    return
                receiving = asyncio.ensure_future(websocket.receive())
            if getting in done:
                await websocket.send_text(orjson.dumps([getting.result()]).decode())
    except WebSocketDisconnect:
        return
    finally:
        close()


def _offer(queue: asyncio.Queue[dict[str, Any]], body: dict[str, Any]) -> None:
    if not queue.full():  # a subscriber too slow to read loses reports, not the server
        queue.put_nowait(body)
