"""DIMSE event handlers: C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET and association events.

Each handler translates a pynetdicom event into service calls and maps service errors to
statuses through :mod:`cloudfilm.interfaces.dimse.status`. Failures carry an ErrorComment
(0000,0902) saying why; the full message goes to the log. Handlers run in the
association's thread; they share one :class:`Gateway` built by the composition root.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context

from cloudfilm.interfaces.dimse import metrics as dimse_metrics
from cloudfilm.interfaces.dimse import sending
from cloudfilm.interfaces.dimse import status as st
from cloudfilm.interfaces.dimse.identifiers import (
    FindQuery,
    Model,
    group_by_patient,
    identifier_bytes,
    parse_find,
    parse_find_encoded,
    query_level,
    response_identifier,
    uid_list,
)
from cloudfilm.services.access.actor import Actor
from cloudfilm.services.archive.ingest import Sender
from cloudfilm.services.archive.query import parse_search
from cloudfilm.services.archive.retrieve import StoredObject
from cloudfilm.services.container import Services
from cloudfilm.services.errors import (
    CloudfilmError,
    InvalidQueryError,
    NotAuthorizedError,
    NotFoundError,
    UnknownDestinationError,
)
from cloudfilm.services.network.peers import Peer

logger = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"
# Patient Root Q/R FIND, MOVE, GET (PS3.4 C.6.1.3); pynetdicom.sop_class builds these names
# dynamically, which type checkers cannot see.
_PATIENT_ROOT = {"1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.1.2",
                 "1.2.840.10008.5.1.4.1.2.1.3"}
_UNCOMPRESSED = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))
# PS3.8 9.3.2.2: at most 128 presentation contexts in one A-ASSOCIATE-RQ.
_MAX_CONTEXTS = 128
_MAX_SUBOPERATIONS = 65535  # Number of * Sub-operations is US (PS3.4 C.4.2.3)


@dataclass
class Gateway:
    """What the handlers share: the services, our AE title and per-association state."""

    services: Services
    ae_title: str
    max_pdu: int
    timeout: float
    _peers: weakref.WeakKeyDictionary[Any, Peer] = field(
        default_factory=weakref.WeakKeyDictionary)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def actor_for(self, assoc: Any) -> Actor:
        """The hospital an association speaks for, as the access policy's actor.

        Raises
        ------
        NotAuthorizedError
            The calling AE title is no longer registered.
        """
        peer = self.peer_for(assoc)
        if peer is None:
            raise NotAuthorizedError(
                f"calling AE {assoc.requestor.ae_title!r} is no longer registered")
        return Actor(kind="hospital", subject=peer.hospital_code,
                     hospital_code=peer.hospital_code,
                     display=peer.description or peer.hospital_code,
                     address=f"ae:{peer.ae_title}")

    def peer_for(self, assoc: Any) -> Peer | None:
        """The registered peer of an association (looked up once, then remembered)."""
        with self._lock:
            found = self._peers.get(assoc)
        if found is None:
            found = self.services.peers.lookup(assoc.requestor.ae_title)
            if found is not None:
                with self._lock:
                    self._peers[assoc] = found
        return found


# -- helpers -----------------------------------------------------------------------------

_DUL_POLL_SECONDS = 0.0002


def set_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN: disable Nagle, or each DIMSE message waits ~40 ms for a delayed ACK.

    References
    ----------
    BENCHMARKING.md (17.8 -> 172.5 instances/s for Orthanc with TCP_NODELAY).
    """
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # the peer already closed; nothing to tune
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # pynetdicom's DUL thread sleeps this long between polls when idle (default 1 ms); each
    # request/response crosses it twice.
    event.assoc.dul._run_loop_delay = _DUL_POLL_SECONDS


def _failure(status: int, message: str) -> Dataset:
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = st.error_comment(message)
    return ds


def _explain(exc: BaseException) -> str:
    # Service errors say what is wrong; anything else is our bug, not the peer's business.
    if isinstance(exc, CloudfilmError):
        return exc.message
    return "internal error in the archive; the operator's log has the details"


def _log_failure(what: str, status: int, exc: BaseException, event: Event, **extra: Any) -> None:
    fields = {"status": f"0x{status:04X}", "calling_ae": event.assoc.requestor.ae_title,
              "error": getattr(exc, "code", type(exc).__name__), **extra}
    if isinstance(exc, CloudfilmError):
        logger.warning(f"cloudfilm.dimse.{what}_failed", extra={**fields, "reason": exc.message})
    else:
        logger.exception(f"cloudfilm.dimse.{what}_failed", extra=fields)


def _request(event: Event) -> Any:
    return event.request


def _model(sop_class_uid: Any) -> Model:
    return "patient" if str(sop_class_uid) in _PATIENT_ROOT else "study"


# -- C-ECHO ------------------------------------------------------------------------------


def handle_echo(event: Event) -> int:
    """Answer a C-ECHO request with Success.

    Returns
    -------
    int
        0x0000.

    References
    ----------
    PS3.4 Annex A (Verification Service Class), PS3.7 9.1.5 (C-ECHO).
    """
    return st.SUCCESS


# -- C-STORE -----------------------------------------------------------------------------


def handle_store(event: Event, gateway: Gateway) -> int | Dataset:
    """Store a received instance through the archive's one ingest pipeline.

    The data set arrives in a file (pynetdicom's chunked receive, or a spool file in
    ``services.spool_dir``), is ingested with ``move=True`` and the response is Success only
    after the blob is fsynced and the index committed.

    Returns
    -------
    int or pydicom.dataset.Dataset
        0x0000; Warning 0xB007 when the data set's SOP Class/Instance UID differs from the
        request's; otherwise a status Dataset with Status and ErrorComment from
        :func:`~cloudfilm.interfaces.dimse.status.store_failure_status`.

    References
    ----------
    PS3.4 B.2.3 (C-STORE statuses), PS3.7 9.1.1 (C-STORE), PS3.7 C.4.1 (ErrorComment).
    """
    started = time.perf_counter()
    request: Any = event.request
    spool_error = getattr(request, "_cloudfilm_spool_error", None)
    if spool_error is not None:
        # The receiver could not write the data set (transport.EventDrivenDUL): disk full.
        _log_failure("c_store", st.OUT_OF_RESOURCES, spool_error, event,
                     sop_instance_uid=str(request.AffectedSOPInstanceUID))
        return _failure(st.OUT_OF_RESOURCES, "the archive could not write the received "
                        "data set; try again later")
    path, spooled = _received_file(event, gateway)
    try:
        peer = gateway.peer_for(event.assoc)
        if peer is None:
            raise NotAuthorizedError(
                f"calling AE {event.assoc.requestor.ae_title!r} is no longer registered")
        sender = Sender(hospital_code=peer.hospital_code,
                        hospital_name=peer.description or peer.hospital_code,
                        door="c-store", remote=peer.ae_title)
        # Concurrent associations share index transactions (services/archive/group_commit).
        # The receiver hashed the spool file as it wrote it (receiving.StoreReceiver).
        stored = gateway.services.ingest.ingest_file_grouped(
            path, sender=sender, move=True,
            sha256=None if spooled else getattr(request, "_cloudfilm_sha256", None))
    except Exception as exc:
        status = st.store_failure_status(exc)
        _log_failure("c_store", status, exc, event,
                     sop_instance_uid=str(request.AffectedSOPInstanceUID))
        return _failure(status, _explain(exc))
    finally:
        if spooled:
            path.unlink(missing_ok=True)
    # Successes at DEBUG: the ingest metrics count them, and at INFO the log line was a
    # tenth of a C-FIND's server CPU (py-spy); failures stay warnings.
    logger.debug("cloudfilm.dimse.c_store", extra={
        "sop_instance_uid": stored.sop_instance_uid, "outcome": stored.outcome,
        "calling_ae": peer.ae_title, "hospital": peer.hospital_code,
        "ms": round((time.perf_counter() - started) * 1000, 2)})
    if stored.outcome == "held":
        # Stored durably but held for reconciliation. 0xB000 is a Warning every SCU knows
        # (storescu and pynetdicom count it as stored, not failed); the comment says why.
        return _failure(st.HELD_WARNING, stored.warnings[0])
    if (stored.sop_instance_uid != str(request.AffectedSOPInstanceUID)
            or stored.sop_class_uid != str(request.AffectedSOPClassUID)):
        # Stored under the data set's own UIDs; tell the sender its command disagreed.
        ds = _failure(0xB007, "stored, but the data set's SOP UIDs differ from the request's")
        return ds
    return st.SUCCESS


def _received_file(event: Event, gateway: Gateway) -> tuple[Path, bool]:
    """Path of the received data set and whether it is our spool copy to delete."""
    try:
        return Path(event.dataset_path), False
    except AttributeError:
        pass
    # Chunked receive is off (another process configured pynetdicom): spool it ourselves.
    fd, name = tempfile.mkstemp(suffix=".dcm", dir=gateway.services.spool_dir)
    with os.fdopen(fd, "wb") as fh:
        fh.write(event.encoded_dataset(include_meta=True))
    return Path(name), True


def discard_partial_dataset(event: Event) -> None:
    """EVT_CONN_CLOSE: remove the temp file of a C-STORE whose data set never completed.

    pynetdicom writes a chunked data set to a NamedTemporaryFile(delete=False) and deletes
    it only after the handler ran, so an abort mid-transfer would leave it behind; the same
    for our DUL's spool file (transport.EventDrivenDUL, receiving.py).
    """
    discard = getattr(getattr(event.assoc, "dul", None), "discard_partial_store", None)
    if discard is not None:
        discard()
    dimse = getattr(event.assoc, "dimse", None)
    message = getattr(dimse, "message", None)
    handle = getattr(message, "_data_set_file", None)
    if handle is None:
        return
    try:
        handle.close()
        os.unlink(handle.name)
        logger.info("cloudfilm.dimse.partial_dataset_removed",
                    extra={"calling_ae": event.assoc.requestor.ae_title})
    except OSError:
        pass  # already consumed by ingest or deleted by pynetdicom


# -- C-FIND ------------------------------------------------------------------------------


def handle_find(event: Event, gateway: Gateway) -> Iterator[tuple[int | Dataset, Any]]:
    """Answer a C-FIND in the Patient Root or Study Root model with the archive's search.

    Yields one Pending response per match; checks for C-CANCEL between matches.

    Yields
    ------
    tuple
        ``(0xFF00, identifier)`` per match, ``(0xFE00, None)`` when cancelled, or one
        ``(status Dataset, None)`` failure (0xA900 bad identifier, 0xA700 out of
        resources, 0xC311 internal error).

    References
    ----------
    PS3.4 C.4.1 (C-FIND), C.6.1/C.6.2 (Patient/Study Root), C.2.2.2 (attribute matching).
    """
    started = time.perf_counter()
    try:
        query = _find_query(event)
        matches = run_find(gateway, query, gateway.actor_for(event.assoc))
    except Exception as exc:
        status = st.find_failure_status(exc)
        _log_failure("c_find", status, exc, event)
        yield _failure(status, _explain(exc)), None
        return
    sent = 0
    syntax = event.context.transfer_syntax
    composed = syntax.is_little_endian and not syntax.is_deflated
    for match in matches:
        if event.is_cancelled:
            yield st.CANCEL, None
            return
        if not event.assoc.is_established:  # released or aborted meanwhile, as pynetdicom
            return
        data = identifier_bytes(match, query, gateway.ae_title,
                                implicit_vr=bool(syntax.is_implicit_VR)) if composed else None
        if data is not None:
            _send_pending(event, data)
        else:
            yield st.PENDING, response_identifier(match, query, gateway.ae_title)
        sent += 1
    # DEBUG like c_store: the audit trail records every search.
    logger.debug("cloudfilm.dimse.c_find", extra={
        "qr_level": query.level, "matches": sent, "calling_ae": event.assoc.requestor.ae_title,
        "ms": round((time.perf_counter() - started) * 1000, 2)})


def _find_query(event: Event) -> FindQuery:
    """The request's query, read from its encoded identifier where that is plain text
    (``parse_find_encoded``), otherwise from pynetdicom's decoded Dataset."""
    request = _request(event)
    model = _model(request.AffectedSOPClassUID)
    syntax = event.context.transfer_syntax
    encoded = request.Identifier
    if encoded is not None and syntax.is_little_endian and not syntax.is_deflated:
        query = parse_find_encoded(encoded.getvalue(), model,
                                   implicit_vr=bool(syntax.is_implicit_VR))
        if query is not None:
            return query
    return parse_find(_identifier(event), model)


def _send_pending(event: Event, identifier: bytes) -> None:
    """Send one Pending C-FIND response whose identifier is already encoded, as
    pynetdicom's C-FIND SCP sends a yielded one (same primitive, same ``send_msg``) minus
    its encoding of a Dataset; pynetdicom still sends the final response."""
    request = _request(event)
    rsp = C_FIND()
    rsp.MessageID = request.MessageID
    rsp.MessageIDBeingRespondedTo = request.MessageID
    rsp.AffectedSOPClassUID = request.AffectedSOPClassUID
    rsp.Status = st.PENDING
    rsp.Identifier = io.BytesIO(identifier)
    event.assoc.dimse.send_msg(rsp, event.context.context_id)


def run_find(gateway: Gateway, query: FindQuery, actor: Actor) -> list[dict[str, Any]]:
    """Search the archive for a C-FIND query as ``actor`` (the calling AE's hospital: only
    its own studies match); PATIENT level groups study matches."""
    limit = gateway.services.limits.max_query_results
    request = parse_search(query.search_level, query.params, max_results=limit)
    result = gateway.services.query.search(request, actor=actor)
    if result.truncated:
        logger.warning("cloudfilm.dimse.c_find_truncated", extra={"limit": limit})
    if query.level == "PATIENT":
        return group_by_patient(result.matches)
    return result.matches


def _identifier(event: Event) -> Dataset:
    try:
        return event.identifier
    except Exception as exc:  # pydicom cannot decode what the peer sent
        raise InvalidQueryError(f"the identifier cannot be decoded: {exc}") from exc


# -- C-MOVE and C-GET --------------------------------------------------------------------


def locate_for_retrieve(gateway: Gateway, identifier: Dataset, model: Model,
                        actor: Actor) -> list[StoredObject]:
    """The stored objects a C-MOVE/C-GET identifier names (unique keys per level), as
    ``actor`` may see them.

    STUDY level names studies directly: one the actor may not see (or that does not exist)
    refuses the whole request (0x0124), audited. PATIENT, SERIES and IMAGE levels search
    first, and the search only matches the actor's studies.

    Raises
    ------
    InvalidQueryError
        The level is missing/invalid or the level's unique key is absent (PS3.4 C.4.2.2.1).
    NotAuthorizedError
        A named study is not the actor's to see.
    """
    level = query_level(identifier, model)
    retrieve, query = gateway.services.retrieve, gateway.services.query
    limit = gateway.services.limits.max_query_results
    objects: list[StoredObject] = []

    def locate(study: str, series: str | None = None) -> list[StoredObject]:
        try:
            return retrieve.locate(study, series, actor=actor)
        except NotFoundError:
            return []

    if level == "PATIENT":
        patient = uid_list(identifier, "PatientID", required=True)[0]
        found = query.search(parse_search("study", [("PatientID", patient)], max_results=limit),
                             actor=actor)
        for study in found.matches:
            objects += locate(study["0020000D"]["Value"][0])
    elif level == "STUDY":
        for study_uid in uid_list(identifier, "StudyInstanceUID", required=True):
            objects += locate(study_uid)
    elif level == "SERIES":
        wanted = uid_list(identifier, "SeriesInstanceUID", required=True)
        found = query.search(parse_search(
            "series", [("SeriesInstanceUID", "\\".join(wanted))], max_results=limit),
            actor=actor)
        for series in found.matches:
            objects += locate(series["0020000D"]["Value"][0], series["0020000E"]["Value"][0])
    else:
        sops = set(uid_list(identifier, "SOPInstanceUID", required=True))
        found = query.search(parse_search(
            "instance", [("SOPInstanceUID", "\\".join(sorted(sops)))], max_results=limit),
            actor=actor)
        series_keys = {(m["0020000D"]["Value"][0], m["0020000E"]["Value"][0])
                       for m in found.matches}
        for study_uid, series_uid in sorted(series_keys):
            objects += [o for o in locate(study_uid, series_uid) if o.sop_instance_uid in sops]
    return objects


def store_contexts(objects: list[StoredObject]) -> list[PresentationContext]:
    """Presentation contexts for sending ``objects``: each as stored, plus uncompressed.

    One context per (SOP class, stored syntax) so that the destination can accept the
    object bit for bit; an Explicit/Implicit VR LE context per SOP class is the fallback
    for a destination that refuses the compressed syntax (PS3.4 C.4.2.3.1 lets the SCP
    choose the syntax of the sub-operations).
    """
    wanted: dict[tuple[str, tuple[str, ...]], None] = {}
    for obj in objects:
        wanted[(obj.sop_class_uid, (obj.transfer_syntax_uid,))] = None
    for sop_class in {o.sop_class_uid for o in objects}:
        wanted[(sop_class, _UNCOMPRESSED)] = None
    if len(wanted) > _MAX_CONTEXTS:
        logger.warning("cloudfilm.dimse.too_many_contexts", extra={"count": len(wanted)})
    return [build_context(sop, list(ts)) for sop, ts in list(wanted)[:_MAX_CONTEXTS]]


def _dataset_for(gateway: Gateway, obj: StoredObject, assoc: Any,
                 accepted: frozenset[tuple[str, str]] | None = None) -> Dataset:
    """The stored object as a Dataset in a syntax the receiving association accepted.

    In the stored syntax and on a file-sending association: a :class:`StoredFile`, sent
    from the stored file untouched. Otherwise read from the stored (or transcoded) bytes
    without touching the elements: pydicom writes unaccessed (raw) elements back byte for
    byte, so a peer receives what the sender sent.
    """
    target = obj.transfer_syntax_uid
    if assoc is not None and accepted is None:
        accepted = sending_contexts(assoc)
    if accepted is not None and (obj.sop_class_uid, target) not in accepted:
        for candidate in _UNCOMPRESSED:
            if (obj.sop_class_uid, candidate) in accepted:
                try:
                    gateway.services.retrieve.check_transfer_syntax([obj], candidate)
                except CloudfilmError:
                    break  # cannot decode it: send as stored and let the sub-operation fail
                target = candidate
                break
    if target == obj.transfer_syntax_uid and sending.can_send_files(assoc):
        path = gateway.services.retrieve.stored_path(obj)
        if path is not None:  # sent byte for byte from the file (sending.py)
            return sending.StoredFile(path, obj.sop_class_uid, obj.sop_instance_uid,
                                      obj.transfer_syntax_uid)
    data = b"".join(gateway.services.retrieve.object_chunks(obj, target))
    return dcmread(io.BytesIO(data))


def sending_contexts(assoc: Any) -> frozenset[tuple[str, str]]:
    """(SOP class, transfer syntax) of each context ``assoc`` accepted for us to send on
    (``accepted_contexts`` sorts them all on every call: compute this once per retrieve)."""
    return frozenset((str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
                     for cx in assoc.accepted_contexts if cx.as_scu)


def _suboperations(event: Event, gateway: Gateway, objects: list[StoredObject],
                   holder: dict[str, Any]) -> Iterator[tuple[int | Dataset, Any]]:
    """``(Pending, data set)`` per object, one ahead: each :class:`~sending.StoredFile`
    can make the next object's data set (``following``), which the sending association
    asks for while the peer stores the current one. Each object's data set is still made
    once, by the same :func:`_dataset_for`, and yielded in order."""
    made: dict[int, Dataset] = {}

    def make(index: int) -> Dataset:
        if index not in made:
            obj, assoc = objects[index], holder.get("assoc")
            if assoc is not None and "contexts" not in holder:
                holder["contexts"] = sending_contexts(assoc)
            try:
                made[index] = _dataset_for(gateway, obj, assoc, holder.get("contexts"))
            except CloudfilmError as exc:
                logger.warning("cloudfilm.dimse.suboperation_failed", extra={
                    "sop_instance_uid": obj.sop_instance_uid, "reason": exc.message})
                failed = Dataset()  # an empty data set counts as a failed sub-operation
                failed.SOPInstanceUID = obj.sop_instance_uid
                made[index] = failed
        return made[index]

    for completed in range(len(objects)):
        if event.is_cancelled:
            logger.info("cloudfilm.dimse.retrieve_cancelled",
                        extra={"completed": completed, "remaining": len(objects) - completed})
            yield st.CANCEL, None
            return
        ds = make(completed)
        made.pop(completed, None)
        if isinstance(ds, sending.StoredFile) and completed + 1 < len(objects):
            ds.following = lambda index=completed + 1: make(index)
        yield st.PENDING, ds


def handle_move(event: Event, gateway: Gateway) -> Iterator[Any]:
    """C-MOVE: send the matching objects to a registered destination over a new association.

    The destination's host and port come from the peer registry; the sub-association uses
    TCP_NODELAY, our maximum PDU, and one presentation context per stored syntax so that
    objects arrive bit-identical. pynetdicom sends a Pending response (remaining, completed,
    failed, warning counts) after each sub-operation; C-CANCEL stops between objects.

    Yields
    ------
    The destination ``(host, port, kwargs)`` or ``(None, None)`` (0xA801 unknown
    destination), the number of sub-operations, then ``(status, dataset)`` pairs.

    References
    ----------
    PS3.4 C.4.2 (C-MOVE), C.4.2.1.5 (statuses), C.4.2.3.1 (sub-operations), PS3.7 9.1.4.
    """
    started = time.perf_counter()
    destination = str(event.move_destination or "").strip()
    try:
        peer = gateway.services.peers.lookup(destination)
        if peer is None:
            raise UnknownDestinationError(f"move destination {destination!r} is not registered")
    except Exception as exc:
        status = st.retrieve_failure_status(exc, service="move")
        _log_failure("c_move", status, exc, event, destination=destination)
        yield None, None  # pynetdicom answers 0xA801 (Move Destination unknown)
        return
    holder: dict[str, Any] = {}

    def remember(store_event: Event) -> None:
        set_nodelay(store_event)
        sending.guard_suboperations(store_event.assoc)
        sending.enable(store_event.assoc)
        holder["assoc"] = store_event.assoc

    try:
        objects = locate_for_retrieve(gateway, _identifier(event),
                                      _model(_request(event).AffectedSOPClassUID),
                                      gateway.actor_for(event.assoc))
        failure = None
        if len(objects) > _MAX_SUBOPERATIONS:
            raise InvalidQueryError(f"{len(objects)} objects match; a C-MOVE can send at most "
                                    f"{_MAX_SUBOPERATIONS}: retrieve series by series")
    except Exception as exc:
        objects, failure = [], exc
    # Nothing to send (failure): Verification, which every Storage SCP accepts, lets the
    # association succeed so that the failure status can be reported.
    kwargs = {"contexts": store_contexts(objects) or [build_context(VERIFICATION)],
              "max_pdu": gateway.max_pdu, "evt_handlers": [(evt.EVT_CONN_OPEN, remember)]}
    yield peer.host, peer.port, kwargs
    if failure is not None:
        status = st.retrieve_failure_status(failure, service="move")
        _log_failure("c_move", status, failure, event, destination=destination)
        yield 1  # pynetdicom only reports a failure after associating with the destination
        yield _failure(status, _explain(failure)), None
        return
    yield len(objects)
    yield from _suboperations(event, gateway, objects, holder)
    logger.info("cloudfilm.dimse.c_move", extra={
        "objects": len(objects), "destination": destination,
        "calling_ae": event.assoc.requestor.ae_title,
        "ms": round((time.perf_counter() - started) * 1000, 2)})


def handle_get(event: Event, gateway: Gateway) -> Iterator[Any]:
    """C-GET: send the matching objects back over the requesting association.

    Yields
    ------
    The number of sub-operations, then ``(status, dataset)`` pairs; a failure before any
    sub-operation is one ``(status Dataset, None)`` (0xA900, 0xA701, 0xC611).

    References
    ----------
    PS3.4 C.4.3 (C-GET), C.4.3.1.4 (statuses), PS3.7 9.1.3.
    """
    try:
        objects = locate_for_retrieve(gateway, _identifier(event),
                                      _model(_request(event).AffectedSOPClassUID),
                                      gateway.actor_for(event.assoc))
        if len(objects) > _MAX_SUBOPERATIONS:
            raise InvalidQueryError(f"{len(objects)} objects match; a C-GET can send at most "
                                    f"{_MAX_SUBOPERATIONS}: retrieve series by series")
    except Exception as exc:
        status = st.retrieve_failure_status(exc, service="get")
        _log_failure("c_get", status, exc, event)
        yield 1
        yield _failure(status, _explain(exc)), None
        return
    yield len(objects)
    sending.enable(event.assoc)
    yield from _suboperations(event, gateway, objects, {"assoc": event.assoc})
    logger.info("cloudfilm.dimse.c_get", extra={
        "objects": len(objects), "calling_ae": event.assoc.requestor.ae_title})


# -- association events ------------------------------------------------------------------


def on_accepted(event: Event, gateway: Gateway) -> None:
    dimse_metrics.ASSOCIATIONS.inc()
    peer = gateway.peer_for(event.assoc)
    logger.info("cloudfilm.dimse.association_accepted", extra={
        "calling_ae": event.assoc.requestor.ae_title,
        "hospital": peer.hospital_code if peer else None,
        "contexts": len(event.assoc.accepted_contexts),
        "rejected_contexts": len(event.assoc.rejected_contexts)})


def on_rejected(event: Event) -> None:
    dimse_metrics.REJECTED.inc()
    logger.warning("cloudfilm.dimse.association_rejected", extra={
        "calling_ae": event.assoc.requestor.ae_title,
        "reason": "calling AE title not registered (cloudfilm peers add), calling from an "
                  "address not registered for it, without required TLS, or too many "
                  "associations"})


def on_aborted(event: Event) -> None:
    dimse_metrics.ABORTED.inc()
    logger.warning("cloudfilm.dimse.association_aborted",
                   extra={"calling_ae": event.assoc.requestor.ae_title})
