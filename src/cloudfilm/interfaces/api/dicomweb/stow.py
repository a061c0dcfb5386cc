"""STOW-RS (PS3.18 10.5): multipart/related uploads, spooled to disk, then ingested.

The whole body is spooled first (streamed, never held in memory) and checked complete
before any object is ingested, so a truncated upload stores nothing and a resend is safe.

Bounded work: a part whose first bytes cannot start a DICOM object
(:func:`part10.looks_like_dicom`) is refused there; the rest of it is neither written nor
parsed (a bare ``application/dicom`` body is not even read further). A request that ends
early (client gone, server shutting down) stops reading and removes its spool files.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import zlib
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from python_multipart.multipart import MultipartParser

from cloudfilm.infrastructure.dicom import part10
from cloudfilm.interfaces.api.auth import CurrentActor
from cloudfilm.interfaces.api.dicomweb.common import base_url, services
from cloudfilm.interfaces.api.dicomweb.media import parse_media_type
from cloudfilm.interfaces.api.errors import HttpProblem
from cloudfilm.interfaces.dimse.status import store_failure_status
from cloudfilm.services.access.actor import Actor
from cloudfilm.services.archive.ingest import (
    IngestItem,
    Sender,
    StoredInstance,
    allowed_sender,
)
from cloudfilm.services.errors import (
    CloudfilmError,
    InvalidInstanceError,
    ResourceUnavailableError,
)

logger = logging.getLogger(__name__)
router = APIRouter()

_DICOM_TYPES = {"application/dicom", ""}


class _Spool:
    """Callbacks for python-multipart that write each part to its own temp file."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder = folder
        self.limit = limit
        self.received = 0
        self.parts: list[tuple[Path, str]] = []
        self.digests: list[Any] = []
        # Parts refused by their first bytes (index -> reason); their data is dropped.
        self.refused: dict[int, str] = {}
        self.finished = False
        self._fd: int | None = None
        self._head = b""
        self._decided = False
        self._header_field = b""
        self._header_value = b""
        self._content_type = ""
        # Parses what the reading loop held back and checks the body is complete; run in
        # the worker thread just before the ingest.
        self.finish: Callable[[], None] = lambda: None

    def on_part_begin(self) -> None:
        self._fd, path = _new_spool_file(self.folder)
        self.parts.append((path, ""))
        self.digests.append(hashlib.sha256())
        self._content_type = ""
        self._head = b""
        self._decided = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_field.strip().lower() == b"content-type":
            self._content_type = parse_media_type(self._header_value.decode("latin-1")).type
        self._header_field = self._header_value = b""

    def on_headers_finished(self) -> None:
        path, _ = self.parts[-1]
        self.parts[-1] = (path, self._content_type)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._fd is None:  # refused: drop the rest of the part unread
            return
        view = memoryview(data)[start:end]
        if not self._decided:
            self._head += bytes(view[:part10.SNIFF_BYTES - len(self._head)])
            if len(self._head) >= part10.SNIFF_BYTES and not self._decide():
                return
        # Straight from the server's buffer to the file: the pieces are ~256 KiB, so a
        # Python-side write buffer would only add a copy of every byte.
        _write_all(self._fd, view)
        self.digests[-1].update(view)

    def _decide(self) -> bool:
        self._decided = True
        if part10.looks_like_dicom(self._head):
            return True
        self.refused[len(self.parts) - 1] = part10.NOT_DICOM
        self._close()
        self.parts[-1][0].unlink(missing_ok=True)
        return False

    def on_part_end(self) -> None:
        if self._fd is not None and not self._decided:
            self._decide()  # a part shorter than the sniffed prefix
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def on_end(self) -> None:
        self.finished = True

    def cleanup(self) -> None:
        self._close()
        for path, _ in self.parts:
            path.unlink(missing_ok=True)


# Spool file names: this process's random token and a counter. tempfile.mkstemp (a random
# name drawn in Python, then a buffered file object) cost ~60 us more per part here.
_SPOOL_TOKEN = os.urandom(6).hex()
_spool_numbers = itertools.count()
_SPOOL_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _new_spool_file(folder: Path) -> tuple[int, Path]:
    """A new private file in ``folder``, open for writing; O_EXCL never reuses a name."""
    global _SPOOL_TOKEN
    while True:
        path = folder / f"stow-{_SPOOL_TOKEN}-{next(_spool_numbers)}.part"
        try:
            return os.open(path, _SPOOL_FLAGS, 0o600), path
        except FileExistsError:  # a forked process sharing the token: draw another
            _SPOOL_TOKEN = os.urandom(6).hex()


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


async def _spool_body(request: Request, folder: Path, limit: int) -> _Spool:
    spool = _Spool(folder, limit)
    try:
        return await _spool_into(spool, request, limit)
    except BaseException:
        # Client gone (ClientDisconnect), cancelled at shutdown (CancelledError), refused
        # (HttpProblem): nothing of this request stays in the spool folder.
        spool.cleanup()
        raise


async def _spool_into(spool: _Spool, request: Request, limit: int) -> _Spool:
    content_type = request.headers.get("content-type", "")
    media = parse_media_type(content_type)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HttpProblem(413, f"the upload declares {declared} bytes; the limit is {limit} "
                          "(CLOUDFILM_HTTP__MAX_UPLOAD_BYTES)", code="too-large")
    if media.type == "application/dicom":
        # A single bare object is accepted too (some gateways send one per request).
        spool.on_part_begin()
        spool.parts[-1] = (spool.parts[-1][0], "application/dicom")

        def write(chunks: list[bytes]) -> None:
            try:
                for chunk in chunks:
                    spool.on_part_data(chunk, 0, len(chunk))
            except OSError as exc:
                raise _spool_failed(exc) from exc

        async for chunks in _batched(request, spool, limit):
            await run_in_threadpool(write, chunks)
            if spool.refused:
                break  # not DICOM: the rest of the body is not worth reading
        spool.on_part_end()
        spool.finished = True
        return spool
    if media.type != "multipart/related":
        raise HttpProblem(415, f"Content-Type must be multipart/related; type=\"application/"
                          f"dicom\" (or application/dicom), got {content_type or 'none'!r}",
                          code="unsupported-media-type")
    if media.params.get("type", "application/dicom").lower() != "application/dicom":
        raise HttpProblem(415, f"only type=\"application/dicom\" parts are accepted, got "
                          f"type={media.params.get('type')!r}", code="unsupported-media-type")
    boundary = media.params.get("boundary")
    if not boundary:
        raise HttpProblem(400, "the multipart/related Content-Type has no boundary parameter",
                          code="no-boundary")
    parser = MultipartParser(boundary, callbacks=cast(Any, _callbacks(spool)))

    def parse(chunks: list[bytes]) -> None:
        try:
            for chunk in chunks:
                parser.write(chunk)
        except HttpProblem:
            raise
        except OSError as exc:  # our spool file, not the body: disk full, permissions
            raise _spool_failed(exc) from exc
        except Exception as exc:  # python-multipart raises its own errors on malformed bodies
            raise HttpProblem(400, f"malformed multipart body: {exc}",
                              code="bad-multipart") from exc

    # The last batch is parsed in the same thread hop as the ingest (_Spool.finish): a
    # one-object request then costs one hop instead of two.
    held: list[bytes] = []
    async for chunks in _batched(request, spool, limit):
        if held:
            await run_in_threadpool(parse, held)
        held = chunks

    def finish() -> None:
        parse(held)
        try:
            parser.finalize()
        except Exception as exc:
            raise HttpProblem(400, f"malformed multipart body: {exc}",
                              code="bad-multipart") from exc
        if not spool.finished:
            raise HttpProblem(400, "the multipart body ended before its closing boundary "
                              f"(--{boundary}--): the upload was truncated; nothing was "
                              "stored", code="truncated")

    spool.finish = finish
    return spool


def _spool_failed(exc: OSError) -> ResourceUnavailableError:
    return ResourceUnavailableError(f"could not spool the upload: {exc.strerror or exc}; "
                                    "nothing was stored")


# The server hands the body over in ~64 KiB pieces; parsing and writing them in batches of
# this size costs one thread hop per batch instead of one per piece (which was ~15% of a
# STOW-RS request's CPU time, measured with py-spy). A batch is the list of the pieces, not
# their concatenation: joining them copied every byte twice (~10% of the request's samples).
_BATCH_BYTES = 2 << 20


# Content-Encoding: gzip (a gateway on a slow link; CT pixels shrink ~2:1). The size limit
# applies to the decompressed bytes; a body inflating beyond this ratio (after the first MiB)
# is a decompression bomb, refused before it costs the limit's worth of work. Blank images
# compress ~1000:1, but a whole request of them above 200:1 is no real upload.
_MAX_GZIP_RATIO = 200
_RATIO_FLOOR = 1 << 20


def _decoder(request: Request) -> Any:
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    raise HttpProblem(415, f"Content-Encoding {encoding!r} is not accepted (gzip is)",
                      code="unsupported-encoding")


async def _batched(request: Request, spool: _Spool, limit: int) -> AsyncIterator[list[bytes]]:
    decoder = _decoder(request)
    if decoder is None:
        async for chunks in _wire(request, spool, limit):
            yield chunks
        return
    async for piece in _inflated(request, spool, limit, decoder):
        yield [piece]


async def _inflated(request: Request, spool: _Spool, limit: int, decoder: Any
                    ) -> AsyncIterator[bytes]:
    wire = inflated = 0
    try:
        async for chunks in _wire(request, spool, limit):
            batch = b"".join(chunks)
            wire += len(batch)
            data = batch
            while True:
                if decoder.eof and (data or decoder.unused_data):
                    raise HttpProblem(400, "data after the end of the gzip stream",
                                      code="bad-encoding")
                # Bounded pieces: a bomb never sits in memory whole.
                piece = await run_in_threadpool(decoder.decompress, data, _BATCH_BYTES)
                data = decoder.unconsumed_tail
                inflated += len(piece)
                _check_inflated(inflated, wire, limit)
                if piece:
                    yield piece
                if not data and len(piece) < _BATCH_BYTES:
                    break  # this batch is consumed and its output drained
        tail = decoder.flush()
        inflated += len(tail)
        _check_inflated(inflated, wire, limit)
        if tail:
            yield tail
    except zlib.error as exc:
        raise HttpProblem(400, f"the gzip body is corrupt: {exc}", code="bad-encoding") from exc
    if decoder.unused_data:  # junk, or a second gzip member (no client sends one)
        raise HttpProblem(400, "data after the end of the gzip stream", code="bad-encoding")
    if not decoder.eof:
        raise HttpProblem(400, "the gzip body ended early: the upload was truncated; nothing "
                          "was stored", code="truncated")


def _check_inflated(inflated: int, wire: int, limit: int) -> None:
    if inflated > limit:
        raise HttpProblem(413, f"the upload exceeds {limit} bytes once decompressed "
                          "(CLOUDFILM_HTTP__MAX_UPLOAD_BYTES)", code="too-large")
    if inflated > _RATIO_FLOOR and inflated > _MAX_GZIP_RATIO * wire:
        raise HttpProblem(413, f"the gzip body inflates more than {_MAX_GZIP_RATIO}:1; "
                          "refused as a decompression bomb", code="too-large")


async def _wire(request: Request, spool: _Spool, limit: int) -> AsyncIterator[list[bytes]]:
    pending: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        if not chunk:
            continue
        spool.received += len(chunk)
        if spool.received > limit:
            raise HttpProblem(413, f"the upload exceeds {limit} bytes "
                              "(CLOUDFILM_HTTP__MAX_UPLOAD_BYTES)", code="too-large")
        pending.append(chunk)
        size += len(chunk)
        if size >= _BATCH_BYTES:
            yield pending
            pending, size = [], 0
    if pending:
        yield pending


def _callbacks(spool: _Spool) -> dict[str, Any]:
    names = ("on_part_begin", "on_part_data", "on_part_end", "on_header_field",
             "on_header_value", "on_header_end", "on_headers_finished", "on_end")
    return {name: getattr(spool, name) for name in names}


@router.post("/studies", summary="STOW-RS: store instances")
async def store_instances(request: Request, actor: CurrentActor) -> Response:
    return await _store(request, actor, None)


@router.post("/studies/{study}", summary="STOW-RS: store instances of one study")
async def store_study_instances(request: Request, actor: CurrentActor,
                                study: str) -> Response:
    return await _store(request, actor, study)


async def _store(request: Request, actor: Actor, study: str | None) -> Response:
    svc = services(request)
    # The local operator (open local mode) records LOCAL; a hospital credential records
    # its hospital, never one named in the request. Authentication ran before any byte was
    # spooled (a wrong or revoked credential is 401), and people cannot upload (403).
    # The hospital edge gateway says so (User-Agent): a door of its own in the metrics.
    door = ("gateway" if request.headers.get("user-agent", "").startswith("cloudfilm-gateway")
            else "stow-rs")
    # No thread hop when the actor may upload (a refusal is written to the audit trail).
    sender = allowed_sender(actor, door=door)
    if sender is None:
        sender = await run_in_threadpool(partial(svc.ingest.sender_for, actor, door=door))
    spool = await _spool_body(request, svc.spool_dir, svc.limits.max_upload_bytes)
    try:
        outcomes = await run_in_threadpool(_finish_and_ingest, svc, spool, sender, study)
    except BaseException:
        spool.cleanup()  # e.g. cancelled before a worker thread took the call
        raise
    return _response(outcomes, base_url(request), study)


def _finish_and_ingest(svc: Any, spool: _Spool, sender: Sender, study: str | None
                       ) -> list[StoredInstance | tuple[str, str, int, str]]:
    # The spool files go here, in the worker thread, once the ingest is done with them:
    # not on the event loop (one unlink per part; the ingest moved most of them already).
    try:
        spool.finish()
        if not spool.parts:
            raise HttpProblem(400, "the multipart body holds no parts", code="empty")
        digests = [d.hexdigest() for d in spool.digests]
        return _ingest_all(svc, spool.parts, digests, sender, study, spool.refused)
    finally:
        spool.cleanup()


def _ingest_all(svc: Any, parts: list[tuple[Path, str]], digests: list[str], sender: Sender,
                study: str | None, refused: dict[int, str]
                ) -> list[StoredInstance | tuple[str, str, int, str]]:
    results: list[StoredInstance | tuple[str, str, int, str] | None] = [None] * len(parts)
    items: list[IngestItem] = []
    positions: list[int] = []
    for index, (path, content_type) in enumerate(parts):
        if index in refused:
            reason = refused[index]
            results[index] = ("", "", store_failure_status(InvalidInstanceError(reason)), reason)
            continue
        if content_type not in _DICOM_TYPES:
            results[index] = ("", "", 0xC000, f"part has Content-Type {content_type}; "
                                              "expected application/dicom")
            continue
        items.append(IngestItem(path, move=True, expected_study_uid=study,
                                sha256=digests[index]))
        positions.append(index)
    # One call for the whole request: the index commits once for all its objects. A
    # one-object request joins the group commit: concurrent single-instance uploads (a
    # gateway per modality, several hospitals) then share one index transaction.
    if len(items) == 1:
        outcomes = [svc.ingest.ingest_grouped(items[0], sender=sender)]
    else:
        outcomes = svc.ingest.ingest_files(items, sender=sender)
    for index, outcome in zip(positions, outcomes, strict=True):
        if isinstance(outcome, CloudfilmError):
            sop_class, sop_uid = _uids_if_readable(parts[index][0])
            results[index] = (sop_class, sop_uid, store_failure_status(outcome), outcome.message)
        else:
            results[index] = outcome
    return [r for r in results if r is not None]


def _uids_if_readable(path: Path) -> tuple[str, str]:
    try:
        with open(path, "rb") as fh:
            if not part10.looks_like_dicom(fh.read(part10.SNIFF_BYTES)):
                return "", ""
        from pydicom import dcmread

        ds = dcmread(path, stop_before_pixels=True, force=True,
                     specific_tags=["SOPClassUID", "SOPInstanceUID"])
        return str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", ""))
    except Exception:
        return "", ""


def _response(outcomes: list[Any], base: str, study: str | None) -> Response:
    referenced, failed = [], []
    held: list[str] = []
    study_uids: set[str] = set()
    for item in outcomes:
        if isinstance(item, StoredInstance):
            study_uids.add(item.study_instance_uid)
            entry: dict[str, Any] = {
                "00081150": {"vr": "UI", "Value": [item.sop_class_uid]},
                "00081155": {"vr": "UI", "Value": [item.sop_instance_uid]},
                "00081190": {"vr": "UR", "Value": [
                    f"{base}/studies/{item.study_instance_uid}/series/"
                    f"{item.series_instance_uid}/instances/{item.sop_instance_uid}"]},
            }
            if item.warnings:
                # 0xB000 "coercion of data elements" is the closest standard warning.
                entry["00081196"] = {"vr": "US", "Value": [0xB000]}
            if item.outcome == "held":
                # Stored, but held for reconciliation (no PatientID, or another hospital's
                # study UID): say why where clients show text, as for failures.
                entry["0040A160"] = {"vr": "UT", "Value": [item.warnings[0]]}
                held.append(item.warnings[0])
            referenced.append(entry)
        else:
            sop_class, sop_uid, reason, message = item
            fail: dict[str, Any] = {"00081197": {"vr": "US", "Value": [reason]}}
            if sop_class:
                fail["00081150"] = {"vr": "UI", "Value": [sop_class]}
            if sop_uid:
                fail["00081155"] = {"vr": "UI", "Value": [sop_uid]}
            # ErrorComment (0000,0902) is not a data set attribute; put the reason in
            # a text attribute clients show: TextValue of the failed item.
            fail["0040A160"] = {"vr": "UT", "Value": [message]}
            failed.append(fail)
    body: dict[str, Any] = {}
    if study or len(study_uids) == 1:
        uid = study or next(iter(study_uids))
        body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{uid}"]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    status = 200 if not failed else (202 if referenced else 409)
    if status == 200 and any("00081196" in r for r in referenced):
        status = 202
    headers = {}
    if held:
        # PS3.18 8.4.2 / RFC 7234 Warning: 299 with the reason, for clients that read
        # headers only.
        text = "; ".join(dict.fromkeys(held)).replace('"', "'")
        headers["Warning"] = f'299 cloudfilm "{len(held)} object(s) {text}"'
    return Response(orjson.dumps(body), status_code=status, headers=headers,
                    media_type="application/dicom+json")
