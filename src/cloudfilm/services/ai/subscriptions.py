"""UPS subscriptions and event reports (PS3.4 CC.2.3-CC.2.4, PS3.18 11.10-11.11).

An engine's AE title subscribes to one of its workitems or, with the well-known UID
:data:`GLOBAL`, to all of them (current and new). Subscriptions are rows; event reports are
fanned out in process: :meth:`UpsEvents.publish` is an :class:`AiWork` listener and hands
each report to the open event channels (WebSockets) of this process only. An engine is
only ever told about its own algorithm's workitems: the subscription and the channel both
belong to its credential.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select

from cloudfilm.infrastructure.db import ai_repository as repo
from cloudfilm.infrastructure.db.models import AiUpsSubscription
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.services.ai.worklist import AiWork, WorkitemView
from cloudfilm.services.errors import InvalidInputError, NotAuthorizedError
from cloudfilm.services.kernel.actor import Actor, Permission

GLOBAL = "1.2.840.10008.5.1.4.34.5"
"""The Global Subscription SOP Instance UID (PS3.4 CC.3.1)."""
UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
STATE_REPORT = 1
"""Event Type ID of a UPS State Report (PS3.4 Table CC.2.4-1)."""

Channel = Callable[[dict[str, Any]], None]


def _ae(ae_title: str) -> str:
    ae = ae_title.strip()
    if not ae or len(ae) > 16 or "\\" in ae or not ae.isprintable():
        raise InvalidInputError("an AE title is 1 to 16 printable characters")
    return ae


def report(view: WorkitemView) -> dict[str, Any]:
    """A UPS State Report as DICOM JSON (PS3.4 Table CC.2.4-2, PS3.18 11.11)."""
    body: dict[str, Any] = {
        "00000002": {"vr": "UI", "Value": [UPS_PUSH]},
        "00001000": {"vr": "UI", "Value": [view.uid]},
        "00001002": {"vr": "US", "Value": [STATE_REPORT]},
        "00741000": {"vr": "CS", "Value": [view.state]},
        "00741238": {"vr": "LT", "Value": [view.reason]} if view.reason else {"vr": "LT"},
    }
    return body


class UpsEvents:
    def __init__(self, db: Database, work: AiWork) -> None:
        self._db = db
        self._work = work
        self._lock = threading.Lock()
        self._channels: dict[tuple[str, str], list[Channel]] = {}
        work.listeners.append(self.publish)

    def _algorithm_pk(self, actor: Actor) -> int:
        if not actor.can(Permission.PERFORM_AI_WORK) or not actor.algorithm_id:
            raise NotAuthorizedError("only an AI algorithm's credential subscribes")
        with self._db.read() as s:
            algo = repo.algorithm(s, actor.algorithm_id)
            if algo is None:
                raise NotAuthorizedError("unknown algorithm")
            return algo.id

    def _target(self, actor: Actor, uid: str) -> str:
        if uid == GLOBAL:
            return ""
        self._work.get(actor, uid)  # refuses another algorithm's workitem
        return uid

    def subscribe(self, actor: Actor, ae_title: str, uid: str) -> None:
        ae, pk = _ae(ae_title), self._algorithm_pk(actor)
        target = self._target(actor, uid)
        with self._db.write() as s:
            row = s.scalars(select(AiUpsSubscription).where(
                AiUpsSubscription.algorithm_id == pk, AiUpsSubscription.ae_title == ae,
                AiUpsSubscription.workitem_uid == target)).first()
            if row is None:
                s.add(AiUpsSubscription(algorithm_id=pk, ae_title=ae, workitem_uid=target,
                                        suspended=False, created_at=datetime.now(UTC)))
            else:
                row.suspended = False

    def suspend(self, actor: Actor, ae_title: str) -> None:
        """Suspend the global subscription: no new workitems, the current ones stay."""
        ae, pk = _ae(ae_title), self._algorithm_pk(actor)
        with self._db.write() as s:
            for row in s.scalars(select(AiUpsSubscription).where(
                    AiUpsSubscription.algorithm_id == pk, AiUpsSubscription.ae_title == ae,
                    AiUpsSubscription.workitem_uid == "")):
                row.suspended = True

    def unsubscribe(self, actor: Actor, ae_title: str, uid: str) -> None:
        ae, pk = _ae(ae_title), self._algorithm_pk(actor)
        target = self._target(actor, uid)
        with self._db.write() as s:
            s.execute(delete(AiUpsSubscription).where(
                AiUpsSubscription.algorithm_id == pk, AiUpsSubscription.ae_title == ae,
                AiUpsSubscription.workitem_uid == target))

    # -- the event channels of this process ---------------------------------------------

    def open_channel(self, actor: Actor, ae_title: str, send: Channel) -> Callable[[], None]:
        """Register ``send`` for the reports to ``ae_title`` of the actor's algorithm;
        returns the function that closes the channel."""
        key = (actor.algorithm_id, _ae(ae_title))
        self._algorithm_pk(actor)
        with self._lock:
            self._channels.setdefault(key, []).append(send)

        def close() -> None:
            with self._lock:
                sends = self._channels.get(key, [])
                if send in sends:
                    sends.remove(send)
        return close

    def publish(self, view: WorkitemView) -> None:
        """Send a State Report to the subscribed, connected AE titles of the workitem's
        algorithm (global subscribers hear of new workitems unless suspended)."""
        with self._lock:
            keys = [k for k, v in self._channels.items() if v and k[0] == view.algorithm_id]
        if not keys:
            return
        with self._db.read() as s:
            algo = repo.algorithm(s, view.algorithm_id)
            if algo is None:
                return
            public_id = algo.public_id
            rows = s.scalars(select(AiUpsSubscription).where(
                AiUpsSubscription.algorithm_id == algo.id,
                AiUpsSubscription.workitem_uid.in_([view.uid, ""]))).all()
            new = view.created_at == view.updated_at
            aes = {r.ae_title for r in rows
                   if r.workitem_uid == view.uid or not r.suspended or not new}
        body = report(view)
        with self._lock:
            sends = [send for ae in aes for send in self._channels.get((public_id, ae), [])]
        for send in sends:
            send(body)
