"""Forwarding: the queue to the cloud's public doors (STOW-RS, the HL7 report door).

Worker threads each claim a batch (DICOM objects of one study, or one HL7 message), send it
with the hospital's credential and record the cloud's answer:

- acknowledged (STOW-RS ReferencedSOPSequence, HL7 ACK ``AA``): ``sent``; the file is deleted
  after the commit unless ``keep_sent_days`` keeps it;
- refused for the object's own sake (STOW-RS FailedSOPSequence with a reason other than
  0xA7xx Out of Resources, or a 4xx for a single object): ``refused`` with the reason;
- anything else (connection error, timeout, 5xx, 401/403/408/429, a FailedSOP 0xA7xx, an
  object the answer does not mention): back to ``received`` after an exponential backoff
  with jitter (full jitter halves the thundering herd when 2,000 gateways come back at once).

A resend of bytes the cloud already holds is harmless: its ingest answers "duplicate".

References
----------
PS3.18 10.5.3 (STOW-RS response), PS3.18 10.5.1.2 (multipart/related request).
"""

from __future__ import annotations

import logging
import random
import secrets
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from cloudfilm.gateway.config import CloudConfig, ForwardConfig
from cloudfilm.gateway.queue import Item, Queue

logger = logging.getLogger(__name__)

_REFERENCED = "00081199"
_FAILED = "00081198"
_SOP_UID = "00081155"
_REASON = "00081197"
_TEXT = "0040A160"
_RETRY_HTTP = {401, 403, 408, 425, 429}


@dataclass(frozen=True, slots=True)
class Outcome:
    sent: list[Item]
    refused: list[tuple[Item, str]]
    retry: list[Item]
    error: str = ""
    solo: bool = False


def backoff(attempts: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: uniform in [d/2, d], d = initial * 2**attempts."""
    delay = min(maximum, initial * (2 ** min(attempts, 30)))
    return rng.uniform(delay / 2, delay)


def http_client(cloud: CloudConfig) -> httpx.Client:
    # One SSL context for both the CA bundle and the client certificate: httpx 0.28
    # deprecates ``verify=<path>`` and ``cert=``.
    verify: Any = True
    if cloud.ca_file or cloud.client_certificate:
        verify = ssl.create_default_context(
            cafile=str(cloud.ca_file) if cloud.ca_file else None)
        if cloud.client_certificate:
            verify.load_cert_chain(str(cloud.client_certificate),
                                   str(cloud.client_key) if cloud.client_key else None)
    return httpx.Client(
        base_url=cloud.url, timeout=httpx.Timeout(cloud.timeout, connect=10.0), verify=verify,
        headers={"Authorization": f"Bearer {cloud.credential.get_secret_value()}",
                 "User-Agent": "cloudfilm-gateway"})


def send_dicom(client: httpx.Client, path_prefix: str, queue: Queue,
               items: list[Item], *, gzip: bool = False) -> Outcome:
    """POST one STOW-RS request holding ``items`` (one study) and classify the answer.
    ``gzip``: the body travels gzip-compressed (level 1: CT pixels shrink ~2:1 at a CPU cost
    far below a slow link's time)."""
    boundary = "cfgw" + secrets.token_hex(12)
    chunks: list[bytes] = []
    for item in items:
        chunks.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        chunks.append(queue.path(item).read_bytes())
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
    body: Any = b"".join(chunks)
    if gzip:
        # Compressed while it is sent (chunked): a connection that fails costs no CPU, which
        # matters while the link is down and batches are retried.
        body = _gzipped(chunks)
        headers["Content-Encoding"] = "gzip"
    try:
        response = client.post(f"{path_prefix}/studies", content=body, headers=headers)
    except httpx.HTTPError as exc:
        return Outcome([], [], items, f"cannot reach the cloud: {type(exc).__name__}: {exc}")
    return classify_stow(response.status_code, response.content, items)


def _gzipped(chunks: list[bytes]) -> Iterator[bytes]:
    packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for chunk in chunks:
        if out := packer.compress(chunk):
            yield out
    yield packer.flush()


def classify_stow(status: int, body: bytes, items: list[Item]) -> Outcome:
    """The STOW-RS answer (PS3.18 10.5.3) per object: sent, refused or to retry."""
    if status >= 500 or status in _RETRY_HTTP:
        return Outcome([], [], items, f"the cloud answered HTTP {status}: {_excerpt(body)}")
    if status not in (200, 202, 409):
        reason = f"the cloud refused the request with HTTP {status}: {_excerpt(body)}"
        if len(items) == 1:
            return Outcome([], [(items[0], reason)], [])
        # Which object caused it is unknown: each goes alone next time.
        return Outcome([], [], items, reason, solo=True)
    try:
        answer = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return Outcome([], [], items, f"unreadable STOW-RS answer (HTTP {status})")
    by_uid = {item.uid: item for item in items}
    sent: list[Item] = []
    refused: list[tuple[Item, str]] = []
    retry: list[Item] = []
    for entry in _sequence(answer, _REFERENCED):
        item = by_uid.pop(_first(entry, _SOP_UID), None)
        if item is not None:
            sent.append(item)
    for entry in _sequence(answer, _FAILED):
        item = by_uid.pop(_first(entry, _SOP_UID), None)
        if item is None:
            continue
        code = _first(entry, _REASON)
        code_value = code if isinstance(code, int) else 0
        text = str(_first(entry, _TEXT) or "")
        if 0xA700 <= code_value <= 0xA7FF:
            retry.append(item)
        else:
            refused.append((item, f"0x{code_value:04X} {text}".strip()))
    # Objects the answer does not name (a failed part the cloud could not even read the
    # UIDs of) are retried alone, so a bad one ends refused with its own reason.
    leftover = list(by_uid.values())
    if leftover and len(items) == 1 and not sent and not refused:
        reason = _excerpt(body) or f"HTTP {status} without a reason"
        return Outcome([], [(leftover[0], f"the cloud refused it: {reason}")], [])
    return Outcome(sent, refused, retry + leftover,
                   "the cloud is out of resources" if retry else
                   ("not named in the STOW-RS answer" if leftover else ""),
                   solo=bool(leftover))


def send_hl7(client: httpx.Client, queue: Queue, item: Item) -> Outcome:
    """POST one HL7 v2 message to the cloud's HL7 door; its ACK says accepted or why not."""
    try:
        response = client.post("/api/v1/hl7", content=queue.path(item).read_bytes(),
                               headers={"Content-Type": "x-application/hl7-v2+er7"})
    except httpx.HTTPError as exc:
        return Outcome([], [], [item], f"cannot reach the cloud: {type(exc).__name__}: {exc}")
    status = response.status_code
    if status == 200 and _ack_code(response.content) in ("AA", "CA"):
        return Outcome([item], [], [])
    if status >= 500 or status in _RETRY_HTTP or status == 200:
        return Outcome([], [], [item], f"the cloud answered HTTP {status}: "
                                       f"{_excerpt(response.content)}")
    return Outcome([], [(item, f"HTTP {status}: {_ack_text(response.content)}")], [])


def _ack_code(body: bytes) -> str:
    for segment in body.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA"):
            fields = segment.split(segment[3:4] or b"|")
            return fields[1].decode("ascii", "replace") if len(fields) > 1 else ""
    return ""


def _ack_text(body: bytes) -> str:
    for segment in body.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA"):
            fields = segment.split(segment[3:4] or b"|")
            if len(fields) > 3:
                return fields[3].decode("utf-8", "replace")
    return _excerpt(body)


def _sequence(answer: Any, tag: str) -> list[dict[str, Any]]:
    if not isinstance(answer, dict):
        return []
    value = answer.get(tag, {}).get("Value", [])
    return [v for v in value if isinstance(v, dict)]


def _first(entry: dict[str, Any], tag: str) -> Any:
    values = entry.get(tag, {}).get("Value") or [None]
    return values[0]


def _excerpt(body: bytes) -> str:
    return body[:300].decode("utf-8", "replace").replace("\r", " ").strip()


class Throttle:
    """A token bucket shared by the forwarders: at most ``rate`` bytes per second during the
    configured local hours (one second of burst)."""

    def __init__(self, rate: int, from_hour: int = 0, until_hour: int = 24) -> None:
        self.rate = rate
        self.hours = (from_hour, until_hour)
        self._tokens = float(rate)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def active(self, now: float | None = None) -> bool:
        hour = time.localtime(now).tm_hour
        start, end = self.hours
        inside = start <= hour < end if start < end else (hour >= start or hour < end)
        return self.rate > 0 and inside

    def wait_seconds(self, size: int) -> float:
        """Take ``size`` bytes from the bucket; how long to wait before sending them."""
        if not self.active():
            return 0.0
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.rate), self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= size
            return max(0.0, -self._tokens / self.rate)


class Forwarder:
    """``concurrency`` threads sending from the queue until :meth:`stop`."""

    def __init__(self, queue: Queue, cloud: CloudConfig, config: ForwardConfig, *,
                 keep_sent_seconds: float = 0.0) -> None:
        self.queue = queue
        self.cloud = cloud
        self.config = config
        self.keep_sent_seconds = keep_sent_seconds
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._rng = random.Random()
        self._throttle = Throttle(config.throttle_bytes_per_second, config.throttle_from_hour,
                                  config.throttle_until_hour)
        self.last_error = ""
        self.last_success_at: float | None = None

    def start(self) -> None:
        for k in range(self.config.concurrency):
            thread = threading.Thread(target=self._run, name=f"forward-{k}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """Something was queued: look now instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=timeout)

    def _run(self) -> None:
        with http_client(self.cloud) as client:
            while not self._stop.is_set():
                try:
                    busy = self._once(client)
                except Exception:  # a bug must not end forwarding; the row is retried
                    logger.exception("cloudfilm.gateway.forward_error")
                    busy = False
                if not busy:
                    self._wake.wait(timeout=self._idle_seconds())
                    self._wake.clear()

    def _idle_seconds(self) -> float:
        due = self.queue.next_due()
        if due is None:
            return 1.0
        return max(0.05, min(1.0, due - time.time()))

    def _once(self, client: httpx.Client) -> bool:
        limit = self.config.daily_limit_bytes
        if limit and self.queue.sent_today() >= limit:
            return False
        items = self.queue.claim(batch_size=self.config.batch_size,
                                 batch_bytes=self.config.batch_bytes)
        if not items:
            return False
        pause = self._throttle.wait_seconds(sum(i.size for i in items))
        if pause:
            self._stop.wait(pause)
        started = time.perf_counter()
        if items[0].kind == "hl7":
            outcome = send_hl7(client, self.queue, items[0])
        else:
            outcome = send_dicom(client, self.cloud.dicomweb_path, self.queue, items,
                                 gzip=self.cloud.gzip)
        self._record(outcome)
        logger.info("cloudfilm.gateway.forwarded", extra={
            "objects": len(items), "sent": len(outcome.sent), "refused": len(outcome.refused),
            "retry": len(outcome.retry), "ms": round((time.perf_counter() - started) * 1000)})
        return bool(outcome.sent or outcome.refused)

    def _record(self, outcome: Outcome) -> None:
        if outcome.sent:
            self.queue.mark_sent(outcome.sent, delete_files=self.keep_sent_seconds <= 0)
            self.last_success_at = time.time()
        for item, reason in outcome.refused:
            self.queue.mark_refused(item, reason)
        if outcome.retry:
            attempts = max(i.attempts for i in outcome.retry)
            delay = backoff(attempts, self.config.retry_initial_seconds,
                            self.config.retry_max_seconds, self._rng)
            self.queue.mark_retry(outcome.retry, outcome.error, delay, solo=outcome.solo)
            self.last_error = outcome.error
            logger.warning("cloudfilm.gateway.retry", extra={
                "objects": len(outcome.retry), "error": outcome.error[:300],
                "delay_s": round(delay, 2)})
