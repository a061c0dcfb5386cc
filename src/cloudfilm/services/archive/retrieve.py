"""Retrieve from the archive (WADO-RS/URI, C-MOVE/C-GET and downloads share this).

Each request names its actor; the access policy decides and the decision is recorded in the
audit trail before anything is returned (``services.access``).

Objects stream from the blob store in 1 MiB chunks, so a 2 GB study never sits in memory.
Pixels are decoded only for rendered images and for uncompressed frames of a compressed
object; objects are sent as stored unless the client asks for another transfer syntax.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from cloudfilm.infrastructure.db import retrieve_repository as rr
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError
from cloudfilm.infrastructure.dicom import json_model, render, transfer_syntax
from cloudfilm.infrastructure.dicom.frame_index import FrameSpan, native_span
from cloudfilm.infrastructure.storage.base import BlobStore, BlobStoreError
from cloudfilm.services.access.actor import Actor, Permission
from cloudfilm.services.access.audit import AuditService
from cloudfilm.services.access.policy import AccessPolicy, Decision, Resource
from cloudfilm.services.archive.frame_audit import FrameAuditWindows
from cloudfilm.services.errors import (
    InvalidQueryError,
    NotAcceptableError,
    NotFoundError,
    ResourceUnavailableError,
)

logger = logging.getLogger(__name__)

_UNCOMPRESSED = {str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)}
# Parsed datasets kept for viewers that fetch frame after frame. Bounded by count AND bytes:
# 64 entries of a 50 MB multi-frame object would otherwise hold 3 GB.
_CACHE_ENTRIES = 64
_CACHE_MAX_BYTES = 128 * 1024 * 1024
_CACHE_MAX_OBJECT = 32 * 1024 * 1024
# Frame spans of native objects by blob key (frame_index.py): ~100 bytes each, so a few
# thousand series' worth; a blob key never changes content.
_SPANS = 200_000


class FrameCache(Protocol):
    """Port: rendered frames by key (``infrastructure.storage.frame_cache``)."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class StoredObject:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_key: str
    size: int
    sha256: str
    number_of_frames: int | None
    hospital_id: int
    # Set when the archive re-encoded it losslessly: served to clients naming no syntax.
    original_transfer_syntax_uid: str = ""
    # "hot" or "cold" (services/storage/tiers.py): where its blob is read from.
    storage_tier: str = "hot"


@dataclass(frozen=True, slots=True)
class Frame:
    data: bytes
    media_type: str
    transfer_syntax_uid: str


class RetrieveService:
    """Retrieval, decided by the access policy and recorded in the audit trail.

    Every entry point that names UIDs (:meth:`locate`, :meth:`metadata`, :meth:`frames`,
    :meth:`rendered`, :meth:`bulkdata`) takes the ``actor``, asks the policy, and records
    the decision (committed) before any byte is returned. A refused request raises
    :class:`NotAuthorizedError` whether the study is absent or not the actor's to see.
    :meth:`object_chunks` streams an object :meth:`locate` returned.
    """

    def __init__(self, db: Database, blobs: BlobStore, policy: AccessPolicy,
                 audit: AuditService, frame_cache: FrameCache | None = None) -> None:
        self._db = db
        # Rendered frames by (instance, frame, window, size, format): the phone viewer
        # asks for the same JPEGs again and again. Consulted only after the decision.
        self._frame_cache = frame_cache
        self._blobs = blobs
        self._policy = policy
        self._audit = audit
        self._datasets: OrderedDict[str, tuple[Dataset, int]] = OrderedDict()
        self._cached_bytes = 0
        self._spans: OrderedDict[str, FrameSpan | None] = OrderedDict()
        self._lock = threading.Lock()
        # A viewer's frames: decided one by one, recorded once a minute a series
        # (frame_audit.py says why and what stays as strict).
        self._frame_windows = FrameAuditWindows()

    # -- decisions -------------------------------------------------------------------------

    def _enforce(self, conn: Any, actor: Actor, action: str, resource: Resource,
                 fetch: Callable[[], list[Any]],
                 extra: dict[str, Any] | None = None) -> tuple[list[Any], Decision]:
        """One decision and its committed audit record (``policy.enforce``), raising on a
        refusal; ``fetch`` reads what is returned, when allowed, before the record is
        written, which counts it."""
        rows: list[Any] = []

        def detail(decision: Decision) -> dict[str, Any]:
            if decision.allowed:
                rows.extend(fetch())
            counted = {"objects": len(rows), **(extra or {})}
            return ({"study": resource.study_uid, **counted} if resource.type != "study"
                    else counted)

        decision = self._policy.enforce(
            conn, actor, Permission.READ_STUDY, resource, action=action, detail=detail,
            refusal=f"{_what(resource.study_uid, resource.series_uid, resource.sop_uid)} is "
                    "not in the archive or you are not authorised to see it (a doctor needs "
                    "the patient's grant for another hospital's studies)")
        return rows, decision

    # -- whole objects ---------------------------------------------------------------------

    def locate(self, study_uid: str, series_uid: str | None = None,
               sop_uid: str | None = None, *, actor: Actor,
               action: str = "retrieve") -> list[StoredObject]:
        """The stored objects of a study, series or instance, in series/instance order.

        The decision and its audit record are committed before this returns.

        Raises
        ------
        NotAuthorizedError
            The actor may not see the study, or (for anyone but the operator and
            administrators) it does not exist.
        NotFoundError
            Nothing is stored under these UIDs (for an actor who may see the study).
        ResourceUnavailableError
            The index or the audit trail is unavailable.
        """
        resource = Resource.of(study_uid, series_uid, sop_uid)
        try:
            with self._db.auditing_read() as session:
                rows, _ = self._enforce(session, actor, action, resource,
                                        lambda: rr.instances(session, study_uid, series_uid,
                                                             sop_uid))
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        if not rows:
            raise NotFoundError(_what(study_uid, series_uid, sop_uid) + " is not in the archive")
        return [_stored(r) for r in rows]

    def _one(self, study_uid: str, series_uid: str, sop_uid: str, actor: Actor,
             action: str) -> StoredObject:
        return self.locate(study_uid, series_uid, sop_uid, actor=actor, action=action)[0]

    def check_transfer_syntax(self, objects: list[StoredObject], wanted: str | None) -> None:
        """Raise :class:`NotAcceptableError` before streaming if any object cannot be sent."""
        for obj in objects:
            self._target_syntax(obj, wanted)

    def object_chunks(self, obj: StoredObject, wanted: str | None = None) -> Iterator[bytes]:
        """Yield the object's Part 10 bytes, as stored or transcoded to ``wanted``."""
        target = self._target_syntax(obj, wanted)
        if target == obj.transfer_syntax_uid:
            try:
                yield from self._blobs.iter_chunks(obj.blob_key)
            except BlobStoreError as exc:
                raise ResourceUnavailableError(str(exc)) from exc
            return
        ds = self._load(obj)
        yield render.transcode(ds, target)

    def stored_path(self, obj: StoredObject) -> Path | None:
        """The object's stored Part 10 file on a local filesystem, or None (object store)."""
        try:
            return self._blobs.local_path(obj.blob_key)
        except BlobStoreError as exc:
            raise ResourceUnavailableError(str(exc)) from exc

    def served_syntax(self, obj: StoredObject, wanted: str | None) -> str:
        """The syntax :meth:`object_chunks` sends for ``wanted``."""
        return self._target_syntax(obj, wanted)

    def _target_syntax(self, obj: StoredObject, wanted: str | None) -> str:
        if wanted in (None, "") and obj.original_transfer_syntax_uid in _UNCOMPRESSED:
            # Re-encoded by the archive: a client naming no syntax gets what was sent.
            return obj.original_transfer_syntax_uid
        if wanted in (None, "", "*") or wanted == obj.transfer_syntax_uid:
            return obj.transfer_syntax_uid
        if wanted in _UNCOMPRESSED and transfer_syntax.can_decode(obj.transfer_syntax_uid):
            return wanted
        raise NotAcceptableError(
            f"instance {obj.sop_instance_uid} is stored as {_ts_name(obj.transfer_syntax_uid)} "
            f"and cannot be sent as {_ts_name(wanted)}; ask for transfer-syntax=* (as stored) "
            f"or {ExplicitVRLittleEndian}"
        )

    # -- metadata --------------------------------------------------------------------------

    def metadata(self, study_uid: str, series_uid: str | None = None,
                 sop_uid: str | None = None, *, actor: Actor) -> bytes:
        """DICOM JSON array of the instances' headers, from precomputed rows (one query).

        Bulk data URIs start with ``{{BASE}}``, which the door replaces by its base URL.
        The decision and its audit record are committed before this returns.

        Raises
        ------
        NotAuthorizedError, NotFoundError, ResourceUnavailableError
            As :meth:`locate`.
        """
        resource = Resource.of(study_uid, series_uid, sop_uid)
        try:
            with self._db.reading() as session:
                docs, _ = self._enforce(session, actor, "metadata", resource,
                                        lambda: rr.metadata(session, study_uid, series_uid,
                                                            sop_uid))
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        if not docs:
            raise NotFoundError(_what(study_uid, series_uid, sop_uid) + " is not in the archive")
        return ("[" + ",".join(docs) + "]").encode()

    # -- frames, rendered images, bulk data ------------------------------------------------

    def frames(self, study_uid: str, series_uid: str, sop_uid: str,
               numbers: list[int] | None, wanted: str | None, *, actor: Actor) -> list[Frame]:
        """Frames (1-based numbers; None: all) as stored (``wanted`` ``*`` or the stored
        syntax) or as uncompressed little endian bytes (``wanted`` None or an uncompressed
        syntax). Decided and audited like :meth:`locate`.

        Raises
        ------
        NotAuthorizedError, NotFoundError, NotAcceptableError, ResourceUnavailableError
        """
        obj = self._frame_object(study_uid, series_uid, sop_uid, actor,
                                 len(numbers) if numbers is not None else 0)
        count = obj.number_of_frames or 1
        numbers = list(range(1, count + 1)) if numbers is None else numbers
        for n in numbers:
            if not 1 <= n <= count:
                raise NotFoundError(
                    f"frame {n} does not exist; instance {obj.sop_instance_uid} has "
                    f"{count} frame(s), numbered from 1"
                )
        stored = obj.transfer_syntax_uid
        if transfer_syntax.get(stored) is None:
            raise NotAcceptableError(f"frames of transfer syntax {stored} cannot be extracted")
        compressed = transfer_syntax.is_compressed(stored)
        as_stored = wanted == "*" or wanted == stored or (not compressed and wanted is None)
        if not compressed and (as_stored or wanted in _UNCOMPRESSED):
            span = self._span(obj)
            if span is not None and span.frames == count:
                # One ranged read a frame: no parse, no copy of the other frames.
                return [Frame(self._read(obj, *span.range_of(n - 1)),
                              "application/octet-stream", str(ExplicitVRLittleEndian))
                        for n in numbers]
        ds = self._load(obj)
        out: list[Frame] = []
        try:
            for n in numbers:
                if as_stored and compressed:
                    out.append(Frame(render.encapsulated_frame(ds, n - 1),
                                     transfer_syntax.frame_media_type(stored), stored))
                elif as_stored or wanted in (None, *_UNCOMPRESSED):
                    data = (render.frame_bytes_uncompressed(ds, n - 1) if not compressed
                            else render.decoded_frame_bytes(ds, n - 1))
                    out.append(Frame(data, "application/octet-stream",
                                     str(ExplicitVRLittleEndian)))
                else:
                    raise NotAcceptableError(
                        f"frames of {obj.sop_instance_uid} are stored as {_ts_name(stored)}; "
                        f"cannot send them as {_ts_name(wanted)}"
                    )
        except render.RenderError as exc:
            raise NotAcceptableError(str(exc)) from exc
        return out

    def _span(self, obj: StoredObject) -> FrameSpan | None:
        """Where a native object's frames lie (found once from its header), or None."""
        with self._lock:
            if obj.blob_key in self._spans:
                self._spans.move_to_end(obj.blob_key)
                return self._spans[obj.blob_key]
        try:
            path = self._blobs.local_path(obj.blob_key)
        except BlobStoreError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        span = native_span(path) if path is not None else None
        with self._lock:
            self._spans[obj.blob_key] = span
            if len(self._spans) > _SPANS:
                self._spans.popitem(last=False)
        return span

    def _read(self, obj: StoredObject, offset: int, length: int) -> bytes:
        try:
            data = self._blobs.read_range(obj.blob_key, offset, length)
        except BlobStoreError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        if len(data) != length:
            raise ResourceUnavailableError(
                f"instance {obj.sop_instance_uid}: its blob ended before frame data")
        return data

    def _frame_object(self, study_uid: str, series_uid: str, sop_uid: str, actor: Actor,
                      frames: int) -> StoredObject:
        """The instance whose frames are read: decided now, recorded once a window.

        Inside an open window of (actor, study, series) an allowed read only counts; the
        first read of a series, any refusal and anything after the window ended go through
        :meth:`_enforce` (a committed record before any byte), which opens a new window.
        """
        resource = Resource.of(study_uid, series_uid, sop_uid)
        key = (actor, study_uid, series_uid)
        windows = self._frame_windows
        self._write_frame_records(windows.expired())
        try:
            with self._db.reading() as session:
                decision = self._policy.decide(session, actor, Permission.READ_STUDY, resource)
                rows = (rr.instances(session, study_uid, series_uid, sop_uid)
                        if decision.allowed and windows.active(key) else None)
                if rows:
                    windows.count(key, frames or 1)
                else:
                    rows, decision = self._enforce(
                        session, actor, "frames", resource,
                        lambda: rr.instances(session, study_uid, series_uid, sop_uid),
                        {"frames_window_seconds": int(windows.seconds)})
                    if rows:
                        self._write_frame_records(windows.opened(
                            key, resident_id=decision.resident_id, reason=decision.reason))
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        if not rows:
            raise NotFoundError(_what(study_uid, series_uid, sop_uid) + " is not in the archive")
        return _stored(rows[0])

    def _write_frame_records(self, entries: list[Any]) -> None:
        if entries:
            # Read records only: committed without waiting for the disk flush.
            try:
                with self._db.auditing_read() as conn:
                    self._audit.write(entries, conn=conn)
            except DatabaseUnavailableError as exc:
                raise ResourceUnavailableError(str(exc)) from exc

    def flush_frame_audit(self) -> None:
        """Write the frame counts of every open window (``cloudfilm serve`` at shutdown)."""
        try:
            self._write_frame_records(self._frame_windows.expired(everything=True))
        except ResourceUnavailableError:
            logger.warning("cloudfilm.audit.frame_counts_lost")

    def rendered(self, study_uid: str, series_uid: str, sop_uid: str, *, actor: Actor,
                 frame: int = 1, media_type: str = "image/jpeg",
                 window: tuple[float, float, str] | None = None,
                 viewport: tuple[int, int] | None = None, quality: int | None = None,
                 action: str = "render") -> bytes:
        """One frame rendered (modality LUT, window, viewport); decided and audited like
        :meth:`locate` (as ``action``: a saved JPEG is a ``download``).

        Raises
        ------
        InvalidQueryError
            The viewport is malformed or larger than ``render.MAX_RENDERED_SIDE`` a side
            (checked before any read).
        """
        if viewport is not None:
            try:
                render.check_viewport(viewport)
            except render.RenderSizeError as exc:
                raise InvalidQueryError(str(exc)) from exc
        obj = self._one(study_uid, series_uid, sop_uid, actor, action)
        return self.render_located(obj, frame=frame, media_type=media_type, window=window,
                                   viewport=viewport, quality=quality)

    def render_located(self, obj: StoredObject, *, frame: int = 1,
                       media_type: str = "image/jpeg",
                       window: tuple[float, float, str] | None = None,
                       viewport: tuple[int, int] | None = None,
                       quality: int | None = None) -> bytes:
        """Render a frame of an object :meth:`locate` returned (decided and recorded
        there: a series saved as JPEGs is one decision, not one per image)."""
        count = obj.number_of_frames or 1
        if not 1 <= frame <= count:
            raise NotFoundError(f"frame {frame} does not exist; the instance has {count}")
        cache = self._frame_cache
        key = f"{obj.sha256}/{frame}/{media_type}/{window}/{viewport}/{quality}"
        if cache is not None and (cached := cache.get(key)) is not None:
            return cached
        try:
            data = render.render_frame(self._load(obj), frame - 1, media_type=media_type,
                                       window=window, viewport=viewport, quality=quality)
        except render.RenderError as exc:
            raise NotAcceptableError(str(exc)) from exc
        if cache is not None:
            cache.put(key, data)
        return data

    def bulkdata(self, study_uid: str, series_uid: str, sop_uid: str, path: str, *,
                 actor: Actor) -> bytes:
        """The value of the element a metadata BulkDataURI points at (``TTTTTTTT``, or
        ``SSSSSSSS/i/TTTTTTTT`` inside a sequence item); decided and audited like
        :meth:`locate`."""
        obj = self._one(study_uid, series_uid, sop_uid, actor, "bulkdata")
        ds = self._load(obj)
        try:
            elem = json_model.bulk_element(ds, path)
        except (ValueError, KeyError, IndexError):
            raise InvalidQueryError(f"bulk data path {path!r} is not TTTTTTTT or "
                                    "SSSSSSSS/item/TTTTTTTT in hex") from None
        if elem is None:
            raise NotFoundError(f"instance {obj.sop_instance_uid} has no element {path}")
        value = elem.value
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode("utf-8")
        return json_model_value_bytes(elem)

    def header(self, obj: StoredObject) -> Dataset:
        """The object's file meta and header, read up to the pixels (for a DICOMDIR
        record); only the first bytes of the object leave the blob store."""
        try:
            path = self._blobs.local_path(obj.blob_key)
            if path is not None:
                return dcmread(path, stop_before_pixels=True)
            with self._blobs.open(obj.blob_key) as fh:
                return dcmread(fh, stop_before_pixels=True)
        except BlobStoreError as exc:
            raise ResourceUnavailableError(str(exc)) from exc

    def _load(self, obj: StoredObject) -> Dataset:
        with self._lock:
            cached = self._datasets.get(obj.blob_key)
            if cached is not None:
                self._datasets.move_to_end(obj.blob_key)
                return cached[0]
        try:
            path = self._blobs.local_path(obj.blob_key)
            if path is not None:
                ds = dcmread(path)
            else:
                with self._blobs.open(obj.blob_key) as fh:
                    ds = dcmread(io.BytesIO(fh.read()))
        except BlobStoreError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        if obj.size <= _CACHE_MAX_OBJECT:
            with self._lock:
                if obj.blob_key not in self._datasets:
                    self._datasets[obj.blob_key] = (ds, obj.size)
                    self._cached_bytes += obj.size
                while (len(self._datasets) > _CACHE_ENTRIES
                       or self._cached_bytes > _CACHE_MAX_BYTES):
                    _, (_, size) = self._datasets.popitem(last=False)
                    self._cached_bytes -= size
        return ds


def _stored(r: Any) -> StoredObject:
    return StoredObject(r.study_instance_uid, r.series_instance_uid, r.sop_instance_uid,
                        r.sop_class_uid, r.transfer_syntax_uid, r.blob_key, r.size_bytes,
                        r.sha256, r.number_of_frames, r.hospital_id,
                        r.original_transfer_syntax_uid, r.storage_tier)


def json_model_value_bytes(elem: Any) -> bytes:
    """Numbers or text sent as bulk data: little endian bytes as they would be encoded."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_data_element(buffer, elem)
    return bytes(buffer.getvalue()[8:])


def _what(study: str, series: str | None, sop: str | None) -> str:
    if sop is not None:
        return f"instance {sop} (series {series}, study {study})"
    if series is not None:
        return f"series {series} of study {study}"
    return f"study {study}"


def _ts_name(uid: str | None) -> str:
    if not uid:
        return "the default transfer syntax"
    name = UID(uid).name
    return f"{name} ({uid})" if name != uid else uid

