"""One viewing of a series on the phone: decided and audited once, then each frame cheap.

A phone scrolling a 300-slice CT asks for 300+ JPEGs in a few seconds. Deciding each one
(session look-up, policy, a committed audit row) cost more than the bytes on 4G (issue 13:
13.2 s against a 10 s budget). So the viewer page opens a *viewing*:

1. :meth:`ViewingService.open` asks the policy once for the series
   (``RetrieveService.locate(action="view")``): one decision and one audit record naming
   the resident and counting the series' objects, the same record "who looked" shows.
2. It returns a *capability*: the study, the series, an expiry and a hash of what signed
   the page in (the session cookie, or the share link's token), with a keyed HMAC under
   the platform's hash key (domain ``viewing-capability``). Frame URLs carry it.
3. A frame request (:meth:`ViewingService.frame`) checks the HMAC and expiry (no I/O),
   that the request holds the same session or link (its hash must match: a leaked URL
   alone opens nothing), and that this session or link still works: checked against the
   database at most every ``RECHECK_SECONDS`` per process, so a sign-out, a deactivated
   account or a revoked share link stops frames within seconds. Then the frame is
   rendered (or read from the disk cache) from the objects the decision located.

The capability is deterministic within a time bucket (same URLs for the same session and
series for half an hour), so the browser's own cache serves a series seen again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cloudfilm.services.archive.retrieve import RetrieveService, StoredObject
from cloudfilm.services.errors import NotAuthenticatedError, NotFoundError
from cloudfilm.services.identity.protection import IdProtector
from cloudfilm.services.kernel.actor import Actor

DOMAIN = "viewing-capability"
BUCKET_SECONDS = 1800  # capabilities of one bucket are identical (browser cache hits)
RECHECK_SECONDS = 15  # a sign-out or a revoked link stops frames within this
_MAX_VIEWINGS = 256
_MAX_CHECKS = 4096

# What the request presents, as the interface layer reads it: the signed-in actor (None when
# the session or link no longer works).
Presenter = Callable[[], Actor | None]


@dataclass(frozen=True, slots=True)
class Capability:
    study_uid: str
    series_uid: str
    expires: int
    binding: str  # first 32 hex of SHA-256 of the session token or share token


def binding_of(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


class ViewingService:
    """Open viewings (one decision each) and serve their frames."""

    def __init__(self, retrieve: RetrieveService, protector: IdProtector, *,
                 recheck_seconds: float = RECHECK_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self._retrieve = retrieve
        self._protector = protector
        self._recheck = recheck_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # (binding, study, series) -> sop -> located object; bounded, per process.
        self._objects: OrderedDict[tuple[str, str, str], dict[str, StoredObject]] = \
            OrderedDict()
        # binding -> (checked at, actor) of the last database check.
        self._checked: OrderedDict[str, tuple[float, Actor]] = OrderedDict()

    # -- opening -------------------------------------------------------------------------

    def open(self, actor: Actor, study_uid: str, series_uid: str, *,
             secret: str) -> tuple[str, list[StoredObject]]:
        """Decide once for the series (audited as ``view``); returns the capability for its
        frame URLs and the located objects in instance order.

        ``secret`` is what signs this browser in (the session token, or the share link's
        token): frame requests must present it again.

        Raises what :meth:`RetrieveService.locate` raises (NotAuthorizedError, ...).
        """
        objects = self._retrieve.locate(study_uid, series_uid, actor=actor, action="view")
        binding = binding_of(secret)
        self._remember(binding, study_uid, series_uid, objects)
        with self._lock:
            self._checked[binding] = (self._clock(), actor)
        now = int(self._clock())
        expires = (now // BUCKET_SECONDS + 2) * BUCKET_SECONDS  # 30 to 60 minutes from now
        return self._sign(Capability(study_uid, series_uid, expires, binding)), objects

    def _remember(self, binding: str, study_uid: str, series_uid: str,
                  objects: list[StoredObject]) -> None:
        key = (binding, study_uid, series_uid)
        with self._lock:
            self._objects[key] = {o.sop_instance_uid: o for o in objects}
            self._objects.move_to_end(key)
            while len(self._objects) > _MAX_VIEWINGS:
                self._objects.popitem(last=False)

    # -- capabilities ----------------------------------------------------------------------

    def _tag(self, payload: str) -> str:
        return self._protector.lookup_hash(DOMAIN, payload)[:32]

    def _sign(self, cap: Capability) -> str:
        payload = f"{cap.study_uid}|{cap.series_uid}|{cap.expires}|{cap.binding}"
        encoded = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        return f"{encoded}.{self._tag(payload)}"

    def verify(self, token: str, *, secret: str) -> Capability:
        """The capability, if its tag is ours, it has not expired and ``secret`` is what
        signed the viewing's browser in.

        Raises NotAuthenticatedError (the page reloads and opens a new viewing).
        """
        encoded, _, tag = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            study, series, expires, binding = payload.split("|")
            cap = Capability(study, series, int(expires), binding)
        except (ValueError, UnicodeDecodeError):
            raise NotAuthenticatedError("not a viewing capability") from None
        if not hmac.compare_digest(tag, self._tag(payload)):
            raise NotAuthenticatedError("not a viewing capability")
        if cap.expires <= self._clock():
            raise NotAuthenticatedError("the viewing expired; reload the page")
        if not secret or not hmac.compare_digest(cap.binding, binding_of(secret)):
            raise NotAuthenticatedError("this viewing belongs to another session")
        return cap

    # -- frames ----------------------------------------------------------------------------

    def frame(self, token: str, sop_uid: str, frame: int, *, secret: str,
              present: Presenter, window: tuple[float, float, str] | None,
              size: int, quality: int) -> bytes:
        """A rendered frame of the viewing's series.

        ``present`` reads who the request's session or link signs in now (a database
        read): called at most every ``recheck_seconds`` per binding, and when this process
        has not located the series yet (then the policy decides again, audited).

        Raises NotAuthenticatedError (expired, forged, another session's, signed out or
        revoked), NotFoundError (not an object of the series), and what rendering raises.
        """
        cap = self.verify(token, secret=secret)
        actor = self._alive(cap.binding, present)
        with self._lock:
            objects = self._objects.get((cap.binding, cap.study_uid, cap.series_uid))
        if objects is None:
            # Another process opened the viewing (or it was evicted): decide again here.
            located = self._retrieve.locate(cap.study_uid, cap.series_uid, actor=actor,
                                            action="view")
            self._remember(cap.binding, cap.study_uid, cap.series_uid, located)
            objects = {o.sop_instance_uid: o for o in located}
        obj = objects.get(sop_uid)
        if obj is None:
            raise NotFoundError("this image is not in the series")
        return self._retrieve.render_located(obj, frame=frame, window=window,
                                             viewport=(size, size), quality=quality)

    def _alive(self, binding: str, present: Presenter) -> Actor:
        now = self._clock()
        with self._lock:
            seen = self._checked.get(binding)
        if seen is not None and now - seen[0] < self._recheck:
            return seen[1]
        actor = present()
        with self._lock:
            if actor is None:
                self._checked.pop(binding, None)
                for key in [k for k in self._objects if k[0] == binding]:
                    del self._objects[key]
            else:
                self._checked[binding] = (now, actor)
                self._checked.move_to_end(binding)
                while len(self._checked) > _MAX_CHECKS:
                    self._checked.popitem(last=False)
        if actor is None:
            raise NotAuthenticatedError("signed out, or the link no longer works")
        return actor

    def forget_subject(self, subject: str) -> None:
        """This process forgets every session or link of ``subject`` at once (sign-out on
        every phone, a share link revoked here); other processes within seconds."""
        with self._lock:
            gone = {b for b, (_, actor) in self._checked.items() if actor.subject == subject}
            for binding in gone:
                del self._checked[binding]
            for key in [k for k in self._objects if k[0] in gone]:
                del self._objects[key]

    def forget(self, secret: str) -> None:
        """This process forgets a session or link at once (sign-out, revocation here)."""
        binding = binding_of(secret)
        with self._lock:
            self._checked.pop(binding, None)
            for key in [k for k in self._objects if k[0] == binding]:
                del self._objects[key]
