"""What the gateway is doing, from its queue: for the CLI, the local page and ``/metrics``.

Everything is read from the queue database, so ``cloudfilm gateway status`` in another
process sees the same figures as the running gateway (WAL lets readers in while it writes).
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cloudfilm.gateway.queue import STATES, Queue

logger = logging.getLogger(__name__)

RATE_WINDOW_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Parked:
    id: int
    kind: str
    uid: str
    study_uid: str
    reason: str
    attempts: int


@dataclass(frozen=True, slots=True)
class AtRisk:
    study_uid: str
    objects: int
    hours_since_exam: float
    late: bool


@dataclass(slots=True)
class Snapshot:
    at: float
    counts: dict[str, int]
    bytes_queued: int
    quota_bytes: int
    quota_warning: bool
    oldest_unsent_seconds: float | None
    sent_per_second: float
    bytes_per_second: float
    last_error: str
    deadline_hours: float
    parked: list[Parked] = field(default_factory=list)
    at_risk: list[AtRisk] = field(default_factory=list)
    # Lossless compression ([compress]): per pack state, [objects, bytes as received,
    # bytes to send]; empty when nothing was ever packed.
    packing: dict[str, list[int]] = field(default_factory=dict)

    def as_json(self) -> bytes:
        return orjson.dumps(asdict(self))


def snapshot(queue: Queue, *, deadline_hours: float = 12.0, now: float | None = None,
             limit: int = 50) -> Snapshot:
    now = time.time() if now is None else now
    counts: dict[str, int] = {state: 0 for state in STATES}
    for state, n in queue.execute("SELECT state, COUNT(*) FROM item GROUP BY state"):
        counts[str(state)] = int(n)  # type: ignore[call-overload]
    oldest = queue.execute("SELECT MIN(received_at) FROM item "
                           "WHERE state IN ('received', 'sending')")[0][0]
    recent = queue.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM item WHERE "
                           "state='sent' AND sent_at>=?", (now - RATE_WINDOW_SECONDS,))[0]
    error = queue.execute("SELECT last_error FROM item WHERE state='received' AND "
                          "last_error<>'' ORDER BY next_attempt_at DESC LIMIT 1")
    parked = [Parked(*row) for row in queue.execute(  # type: ignore[arg-type]
        "SELECT id, kind, uid, study_uid, last_error, attempts FROM item "
        "WHERE state='refused' ORDER BY id LIMIT ?", (limit,))]
    # The 12-hour rule counts from the exam; without StudyDate/Time, from reception.
    risk_after = deadline_hours / 2 * 3600
    at_risk = []
    for study, n, start in queue.execute(
            "SELECT study_uid, COUNT(*), MIN(COALESCE(exam_at, received_at)) FROM item "
            "WHERE kind='dicom' AND state IN ('received', 'sending') GROUP BY study_uid "
            "HAVING MIN(COALESCE(exam_at, received_at)) <= ? ORDER BY 3 LIMIT ?",
            (now - risk_after, limit)):
        hours = (now - float(start)) / 3600  # type: ignore[arg-type]
        at_risk.append(AtRisk(str(study), int(n), round(hours, 2),  # type: ignore[call-overload]
                              hours >= deadline_hours))
    used = queue.used_bytes()
    return Snapshot(
        at=now, counts=counts, bytes_queued=used, quota_bytes=queue.quota_bytes,
        quota_warning=used >= queue.warn_fraction * queue.quota_bytes,
        oldest_unsent_seconds=None if oldest is None else round(now - float(oldest), 1),  # type: ignore[arg-type]
        sent_per_second=round(int(recent[0]) / RATE_WINDOW_SECONDS, 3),  # type: ignore[call-overload]
        bytes_per_second=round(int(recent[1]) / RATE_WINDOW_SECONDS, 1),  # type: ignore[call-overload]
        last_error=str(error[0][0]) if error else "", deadline_hours=deadline_hours,
        parked=parked, at_risk=at_risk,
        packing={k: list(v) for k, v in queue.pack_totals().items()})


def render_text(snap: Snapshot) -> str:
    """The ``cloudfilm gateway status`` output."""
    used_pct = 100 * snap.bytes_queued / snap.quota_bytes
    oldest = ("none" if snap.oldest_unsent_seconds is None
              else _duration(snap.oldest_unsent_seconds))
    lines = [
        "queue: " + ", ".join(f"{state} {snap.counts[state]}" for state in STATES),
        f"disk: {snap.bytes_queued / 1e6:.1f} MB of {snap.quota_bytes / 1e6:.1f} MB quota "
        f"({used_pct:.0f}%)" + ("  WARNING: nearly full" if snap.quota_warning else ""),
        f"oldest unsent object: {oldest}",
        f"send rate (last 5 min): {snap.sent_per_second:.2f} objects/s, "
        f"{snap.bytes_per_second / 1e6:.2f} MB/s",
    ]
    if snap.packing:
        packed = snap.packing.get("packed", [0, 0, 0])
        waiting = sum(snap.packing.get(s, [0])[0] for s in ("pending", "packing"))
        ratio = f" ({packed[1] / packed[2]:.2f}:1)" if packed[2] else ""
        lines.append(f"lossless compression: packed {packed[0]}, {packed[1] / 1e6:.1f} MB -> "
                     f"{packed[2] / 1e6:.1f} MB{ratio}; sent as received "
                     f"{snap.packing.get('left', [0])[0]}; waiting {waiting}")
    if snap.last_error:
        lines.append(f"last error: {snap.last_error[:200]}")
    if snap.at_risk:
        lines.append(f"studies at risk of the {snap.deadline_hours:g}-hour rule:")
        lines += [f"  {'LATE' if r.late else 'risk'}  {r.study_uid}  {r.objects} objects, "
                  f"{r.hours_since_exam:.1f} h since the exam" for r in snap.at_risk]
    if snap.parked:
        lines.append("parked (refused by the cloud; `cloudfilm gateway retry` after fixing):")
        lines += [f"  #{p.id} {p.kind} {p.uid}: {p.reason[:160]}" for p in snap.parked]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class QueueCollector:
    """Prometheus collector reading the queue at scrape time (no counters to lose on restart)."""

    def __init__(self, queue: Queue, deadline_hours: float) -> None:
        self.queue = queue
        self.deadline_hours = deadline_hours

    def collect(self) -> Iterator[Metric]:
        snap = snapshot(self.queue, deadline_hours=self.deadline_hours, limit=10_000)
        objects = GaugeMetricFamily("cloudfilm_gateway_queue_objects",
                                    "Objects in the gateway's queue by state", labels=["state"])
        for state, n in snap.counts.items():
            if state != "sent":
                objects.add_metric([state], n)
        yield objects
        sent = CounterMetricFamily("cloudfilm_gateway_sent_objects",
                                   "Objects the cloud acknowledged")
        sent.add_metric([], snap.counts["sent"])
        yield sent
        yield GaugeMetricFamily("cloudfilm_gateway_queue_bytes", "Bytes held in the queue",
                                value=snap.bytes_queued)
        yield GaugeMetricFamily("cloudfilm_gateway_quota_bytes", "The queue's disk quota",
                                value=snap.quota_bytes)
        yield GaugeMetricFamily("cloudfilm_gateway_oldest_unsent_seconds",
                                "Age of the oldest object not yet acknowledged by the cloud",
                                value=snap.oldest_unsent_seconds or 0.0)
        yield GaugeMetricFamily("cloudfilm_gateway_studies_at_risk",
                                "Unsent studies past half of the upload deadline",
                                value=len(snap.at_risk))
        yield GaugeMetricFamily("cloudfilm_gateway_studies_late",
                                "Unsent studies past the upload deadline",
                                value=sum(r.late for r in snap.at_risk))


class StatusServer:
    """``/`` (a small page), ``/status.json`` and ``/metrics`` on a local port."""

    def __init__(self, queue: Queue, host: str, port: int, deadline_hours: float) -> None:
        registry = CollectorRegistry()
        registry.register(QueueCollector(queue, deadline_hours))
        self.queue = queue
        self.deadline_hours = deadline_hours
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, generate_latest(registry), "text/plain; version=0.0.4")
                elif self.path == "/status.json":
                    self._send(200, outer.snapshot().as_json(), "application/json")
                elif self.path == "/":
                    self._send(200, render_html(outer.snapshot()).encode(),
                               "text/html; charset=utf-8")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every 15 s would flood the log

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="status",
                                        daemon=True)

    def snapshot(self) -> Snapshot:
        return snapshot(self.queue, deadline_hours=self.deadline_hours)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def render_html(snap: Snapshot) -> str:
    text = html.escape(render_text(snap))
    return ("<!doctype html><html lang=en><meta charset=utf-8>"
            "<meta http-equiv=refresh content=10><title>cloudfilm gateway</title>"
            "<style>body{font:14px system-ui;margin:2em}pre{font:13px ui-monospace,monospace;"
            "background:#f4f4f4;padding:1em}</style><h1>cloudfilm gateway</h1>"
            f"<pre>{text}</pre><p><a href=/status.json>status.json</a> · "
            "<a href=/metrics>metrics</a></p></html>")
