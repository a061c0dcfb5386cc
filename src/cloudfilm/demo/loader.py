"""Load the demo province through the archive's real doors: C-STORE, STOW-RS and FHIR.

Nothing is written to the database directly: hospitals whose door is ``dimse`` associate
with their own AE title (registered as a peer first) and send C-STORE requests, their
reports as SR objects after the images on the same association; the others POST
multipart/related bodies to ``/studies/{study}`` and their reports as FHIR
DiagnosticReports to ``/api/v1/fhir/DiagnosticReport`` (with the same credential), after
the images or, for a few, before them (the platform holds those and links them when the
images arrive).

A study the archive already holds completely (QIDO-RS ``NumberOfStudyRelatedInstances``,
less its SR reports) is not sent again, nor a report whose versions the archive already
lists (``GET /api/v1/reports``), so a second run sends nothing; whatever an interrupted run
cut short is sent again and the resent objects and reports are recognised as duplicates.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association

from cloudfilm.demo.objects import SOP_CLASSES, exam_datasets, to_part10
from cloudfilm.demo.province import NATIONAL_ID_ISSUER, Exam, Hospital, Province
from cloudfilm.demo.reports import SR_SOP_CLASS, fhir_reports, sr_datasets
from cloudfilm.services.access.actor import LOCAL_OPERATOR as OPERATOR
from cloudfilm.services.errors import CloudfilmError, NotFoundError
from cloudfilm.services.identity.hospitals import HospitalInput, HospitalService

logger = logging.getLogger(__name__)

# One STOW-RS request carries up to this much: the archive commits once per request.
_STOW_BODY_BYTES = 16 << 20
_STATUS_OK = {0x0000, 0xB000, 0xB006, 0xB007}  # Success and the C-STORE warnings (PS3.4 B.2.3)

Progress = Callable[[Exam, int, int], None]
"""Called after each acknowledged object: (exam, objects, bytes)."""
Credentials = Callable[[Hospital], str]
"""A hospital's STOW-RS bearer token (the archive records the hospital from it)."""


class DemoLoadError(RuntimeError):
    """The archive refused or failed an object; the message says which and why."""


@dataclass(slots=True)
class LoadSummary:
    """What a load did. Report counts are report *versions* (an amended report has two)."""

    studies_planned: int = 0
    studies_skipped: int = 0
    studies_sent: int = 0
    instances_sent: int = 0  # images (SR reports count as reports)
    bytes_sent: int = 0
    reports_planned: int = 0
    reports_skipped: int = 0  # the archive already had them
    reports_sent: int = 0  # accepted (created, new version, or answered as a duplicate)
    reports_failed: int = 0  # refused, or not sent because their exam failed
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Target:
    """Where the archive listens."""

    dicomweb: str  # e.g. http://127.0.0.1:8042/dicomweb
    dicom_host: str
    dicom_port: int
    called_ae: str


# Province levels as the hospital registry records them: (level, grade).
_LEVELS = {"三级甲等": ("tertiary", "A"), "三级乙等": ("tertiary", "B"),
           "二级甲等": ("secondary", "A"), "二级乙等": ("secondary", "B"), "一级": ("primary", "")}


def register_hospitals(hospitals: HospitalService, province: Province) -> tuple[int, int]:
    """Register the hospitals (with where their headers carry the resident ID, so that the
    master patient index links them) and the DIMSE hospitals' AE titles; idempotent.

    The AE titles' host and port are where C-MOVE would send to; the demo hospitals do not
    listen. Returns (hospitals registered, AE titles registered) by this call.
    """
    added_hospitals = added_peers = 0
    for hospital in province.hospitals:
        try:
            view = hospitals.get(hospital.code)
        except NotFoundError:
            view = None
        if view is None or not view.level:
            level, grade = _LEVELS[hospital.level]
            view = hospitals.register(HospitalInput(
                code=hospital.code, name=hospital.name, level=level, grade=grade,
                city=hospital.city, national_id_source="other_patient_ids",
                national_id_issuer=NATIONAL_ID_ISSUER), actor=OPERATOR)
            added_hospitals += 1
        if hospital.door == "dimse" and not any(
                p.ae_title == hospital.ae_title for p in view.ae_titles):
            try:
                hospitals.add_ae_title(hospital.code, hospital.ae_title, "127.0.0.1", 104,
                                       description=hospital.name)
                added_peers += 1
            except CloudfilmError as exc:
                if exc.code != "peer-exists":  # another run registered it meanwhile: fine
                    raise
    return added_hospitals, added_peers


def held_instance_counts(client: httpx.Client, study_uids: Iterable[str]) -> dict[str, int]:
    """NumberOfStudyRelatedInstances of each study the archive holds (QIDO-RS, paged)."""
    wanted = set(study_uids)
    held: dict[str, int] = {}
    offset, page = 0, 1000
    while True:
        response = client.get("/studies", params={
            "includefield": "NumberOfStudyRelatedInstances", "limit": page, "offset": offset})
        response.raise_for_status()
        rows = response.json() if response.content else []
        for row in rows:
            uid = row.get("0020000D", {}).get("Value", [""])[0]
            if uid in wanted:
                held[uid] = int(row.get("00201208", {}).get("Value", [0])[0] or 0)
        if len(rows) < page:
            return held
        offset += page


def api_base(dicomweb: str) -> str:
    """The platform's REST API next to its DICOMweb base URL.

    ``http://host:8042/dicomweb`` -> ``http://host:8042/api/v1`` (a path prefix before
    ``/dicomweb``, as a reverse proxy adds it, is kept).
    """
    url = httpx.URL(dicomweb)
    path = url.path.rstrip("/")
    prefix = path[: -len("/dicomweb")] if path.endswith("/dicomweb") else ""
    return str(url.copy_with(path=f"{prefix}/api/v1", query=None, fragment=None))


def held_report_versions(api: httpx.Client, study_uids: Iterable[str]) -> dict[str, int]:
    """Versions of the report the archive lists for each study (held reports included),
    from the report search (``GET /reports``, paged); the most when a study has several."""
    wanted = set(study_uids)
    found: dict[str, int] = {}
    offset, page = 0, 500
    while True:
        response = api.get("/reports", params={"limit": page, "offset": offset})
        response.raise_for_status()
        rows = response.json()
        for row in rows:
            uid = row.get("study_instance_uid", "")
            if uid in wanted:
                found[uid] = max(found.get(uid, 0), int(row.get("versions") or 0))
        if len(rows) < page:
            return found
        offset += page


@dataclass(frozen=True, slots=True)
class _Work:
    """What one exam still needs: its images, its report, or both."""

    exam: Exam
    images: bool
    reports: int  # report versions to send (0: none)


@dataclass(slots=True)
class _Sent:
    """Progress of one exam, kept by the caller so that a failure does not lose it."""

    instances: int = 0
    size: int = 0
    reports: int = 0
    refused: list[str] = field(default_factory=list)


def _plan(exam: Exam, held: dict[str, int], held_reports: dict[str, int]) -> _Work:
    versions = len(exam.report.versions) if exam.report is not None else 0
    on_file = held_reports.get(exam.study_uid, 0)
    # The QIDO count includes the SR objects of an SR report: those are not images.
    sr_held = min(on_file, versions) if exam.report is not None and \
        exam.report.kind == "sr" else 0
    images = held.get(exam.study_uid, 0) - sr_held < exam.instance_count
    return _Work(exam, images, versions if on_file < versions else 0)


def load_province(province: Province, target: Target, *, seed: int, workers: int = 3,
                  progress: Progress | None = None,
                  on_plan: Callable[[list[Exam]], None] | None = None,
                  credentials: Credentials | None = None,
                  stop: threading.Event | None = None) -> LoadSummary:
    """Send the images and reports the archive does not hold yet; return what was done.

    Parameters
    ----------
    workers
        Exams sent concurrently (each on its own association or HTTP connection).
    progress
        Called after each acknowledged image object (reports are not reported here).
    on_plan
        Called once with the exams whose images will be sent (to size a progress bar).
    credentials
        Token of a hospital that sends over HTTP (STOW-RS images, FHIR reports), asked
        once per hospital that has something to send; without it the HTTP doors record
        uploads and reports under ``LOCAL``.
    stop
        Set it to stop after the objects in flight (Ctrl-C).

    Raises
    ------
    DemoLoadError
        Only for setup problems (the archive does not answer QIDO-RS or the report list);
        refused objects and reports are listed in ``LoadSummary.failures``.
    """
    summary = LoadSummary(studies_planned=len(province.exams))
    summary.reports_planned = sum(len(e.report.versions) for e in province.exams
                                  if e.report is not None)
    uids = [e.study_uid for e in province.exams]
    with httpx.Client(base_url=target.dicomweb, timeout=120) as client, \
            httpx.Client(base_url=api_base(target.dicomweb), timeout=120) as api:
        try:
            held = held_instance_counts(client, uids)
        except httpx.HTTPError as exc:
            raise DemoLoadError(f"the archive at {target.dicomweb} does not answer QIDO-RS: "
                                f"{exc}") from exc
        try:
            held_reports = held_report_versions(api, uids)
        except (httpx.HTTPError, ValueError) as exc:
            raise DemoLoadError(f"the archive at {api.base_url} does not list its reports "
                                f"(GET /reports): {exc}") from exc
        work = [_plan(e, held, held_reports) for e in province.exams]
        todo = [w for w in work if w.images or w.reports]
        summary.studies_skipped = sum(not w.images for w in work)
        summary.reports_skipped = summary.reports_planned - sum(w.reports for w in work)
        if on_plan is not None:
            on_plan([w.exam for w in todo if w.images])
        tokens: dict[str, str] = {}
        if credentials is not None:
            for hospital in {w.exam.hospital.code: w.exam.hospital for w in todo
                             if _uses_http(w)}.values():
                tokens[hospital.code] = credentials(hospital)

        def send(w: _Work, sent: _Sent) -> None:
            if stop is not None and stop.is_set():
                return
            exam, token = w.exam, tokens.get(w.exam.hospital.code)
            resources = fhir_reports(exam) if w.reports else []
            early = 1 if resources and exam.report is not None and \
                exam.report.before_images else 0
            # The RIS may be quicker than the PACS: the platform holds such a report.
            _post_fhir(api, resources[:early], token, sent)
            srs = sr_datasets(exam) if w.reports else []
            if exam.hospital.door == "dimse":
                _send_dimse(exam, target, seed, progress, stop, w.images, srs, sent)
            else:
                _send_stow(client, exam, seed, progress, stop, token, w.images, srs, sent)
            if stop is None or not stop.is_set():
                _post_fhir(api, resources[early:], token, sent)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo") as pool:
            futures: dict[Future[None], tuple[_Work, _Sent]] = {}
            for w in todo:
                sent = _Sent()
                futures[pool.submit(send, w, sent)] = (w, sent)
            for future in as_completed(futures):  # this thread alone updates the summary
                w, sent = futures[future]
                where = f"study {w.exam.study_uid} ({w.exam.hospital.code})"
                try:
                    future.result()
                except (DemoLoadError, httpx.HTTPError, OSError) as exc:
                    summary.failures.append(f"{where}: {exc}")
                    # Reports after the failure were not sent: they count as failed.
                    summary.reports_failed += w.reports - sent.reports - len(sent.refused)
                else:
                    if w.images and not (stop is not None and stop.is_set()):
                        summary.studies_sent += 1
                summary.instances_sent += sent.instances
                summary.bytes_sent += sent.size
                summary.reports_sent += sent.reports
                summary.reports_failed += len(sent.refused)
                summary.failures.extend(f"report of {where}: {why}" for why in sent.refused)
    return summary


def _uses_http(w: _Work) -> bool:
    """Whether the exam's work goes through an HTTP door (needs the hospital's token)."""
    if w.images and w.exam.hospital.door == "stow":
        return True
    return bool(w.reports) and w.exam.report is not None and w.exam.report.kind == "fhir"


def _post_fhir(api: httpx.Client, resources: list[dict[str, Any]],
               token: str | None, sent: _Sent) -> None:
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    for resource in resources:
        response = api.post("/fhir/DiagnosticReport", content=orjson.dumps(resource),
                            headers=headers)
        if response.status_code in (200, 201):
            sent.reports += 1
            continue
        try:
            issue = response.json()["issue"][0]
            why = f"{issue.get('diagnostics', '')} {issue.get('expression', [''])[0]}".strip()
        except (ValueError, KeyError, IndexError, TypeError):
            why = response.text[:300]
        sent.refused.append(f"FHIR DiagnosticReport answered {response.status_code}: {why}")


def _send_stow(client: httpx.Client, exam: Exam, seed: int, progress: Progress | None,
               stop: threading.Event | None, token: str | None, images: bool,
               srs: list[Dataset], sent: _Sent) -> None:
    batch: list[bytes] = []

    def flush() -> None:
        if not batch:
            return
        boundary = uuid.uuid4().hex
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; '
                                   f"boundary={boundary}",
                   "Accept": "application/dicom+json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        body = b"".join(
            b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part
            + b"\r\n" for part in batch) + b"--" + boundary.encode() + b"--\r\n"
        response = client.post(f"/studies/{exam.study_uid}", content=body, headers=headers)
        if response.status_code not in (200, 202) or "00081198" in response.text:
            raise DemoLoadError(f"STOW-RS answered {response.status_code}: "
                                f"{response.text[:300]}")
        sent.instances += len(batch)
        sent.size += sum(len(p) for p in batch)
        if progress is not None:
            progress(exam, len(batch), sum(len(p) for p in batch))
        batch.clear()

    pending = 0
    for ds in exam_datasets(exam, seed) if images else ():
        if stop is not None and stop.is_set():
            return
        part = to_part10(ds)
        batch.append(part)
        pending += len(part)
        if pending >= _STOW_BODY_BYTES:
            flush()
            pending = 0
    flush()
    # SR reports one request each after the images, in order (an amendment after its
    # predecessor), so that a refused one is told apart.
    for ds in srs:
        if stop is not None and stop.is_set():
            return
        boundary = uuid.uuid4().hex
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; '
                                   f"boundary={boundary}", "Accept": "application/dicom+json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        body = (b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                + to_part10(ds) + b"\r\n--" + boundary.encode() + b"--\r\n")
        response = client.post(f"/studies/{exam.study_uid}", content=body, headers=headers)
        if response.status_code in (200, 202) and "00081198" not in response.text:
            sent.reports += 1
        else:
            sent.refused.append(f"STOW-RS of SR {ds.SOPInstanceUID} answered "
                                f"{response.status_code}: {response.text[:300]}")


def _nodelay(event: evt.Event) -> None:
    # Without it every C-STORE response waits ~40 ms for a delayed ACK on loopback.
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _send_dimse(exam: Exam, target: Target, seed: int, progress: Progress | None,
                stop: threading.Event | None, images: bool, srs: list[Dataset],
                sent: _Sent) -> None:
    if not images and not srs:
        return
    ae = _scu(exam.hospital)
    assoc = ae.associate(target.dicom_host, target.dicom_port, ae_title=target.called_ae,
                         evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
    if not assoc.is_established:
        raise DemoLoadError(f"association {exam.hospital.ae_title} -> {target.called_ae} at "
                            f"{target.dicom_host}:{target.dicom_port} was not accepted "
                            "(is the AE title registered as a peer?)")
    try:
        for ds in exam_datasets(exam, seed) if images else ():
            if stop is not None and stop.is_set():
                return
            refused = _c_store(assoc, ds)
            if refused:
                raise DemoLoadError(refused)
            nbytes = _approx_size(ds)
            sent.instances += 1
            sent.size += nbytes
            if progress is not None:
                progress(exam, 1, nbytes)
        # The PACS sends the report after the images, on the same association.
        for ds in srs:
            if stop is not None and stop.is_set():
                return
            refused = _c_store(assoc, ds)
            if refused:
                sent.refused.append(refused)
            else:
                sent.reports += 1
    finally:
        assoc.release()


def _c_store(assoc: Association, ds: Dataset) -> str:
    """Send one object; "" when the archive took it, else why not."""
    status = assoc.send_c_store(ds)
    code = int(getattr(status, "Status", -1)) if status else -1
    if code in _STATUS_OK:
        return ""
    comment = str(getattr(status, "ErrorComment", "")) if status else "no response"
    return f"C-STORE of {ds.SOPInstanceUID} answered 0x{code & 0xFFFF:04X} {comment}"


def _scu(hospital: Hospital) -> AE:
    ae = AE(ae_title=hospital.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    for sop_class in (*SOP_CLASSES.values(), SR_SOP_CLASS):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
    return ae


def _approx_size(ds: Dataset) -> int:
    pixels = ds.get("PixelData")
    return len(pixels) + 2048 if isinstance(pixels, bytes) else 2048
