"""Index-wide gauges for /metrics (storage, reconciliation queue, jobs, audit chain), read
from the database through :class:`~cloudfilm.services.health.FiguresService`.

They live in a registry of their own, one per app, next to the process's default registry
(HTTP, ingest, DIMSE, audit counters): the figures are the same whichever process answers,
while the counters are per process (with ``--workers N`` each scrape sees one worker's).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cloudfilm.services.health import FiguresService

logger = logging.getLogger(__name__)


class IndexCollector(Collector):
    def __init__(self, figures: FiguresService) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        try:
            f = self._figures.figures()
        except Exception:  # a scrape must not fail because the index is away; /healthz says
            logger.warning("cloudfilm.metrics.figures_failed", exc_info=True)
            return
        yield GaugeMetricFamily("cloudfilm_storage_objects",
                                "Objects in the index (current versions)", value=f.instances)
        yield GaugeMetricFamily("cloudfilm_storage_bytes",
                                "Bytes of the objects in the index (current versions)",
                                value=f.bytes)
        yield GaugeMetricFamily("cloudfilm_storage_studies", "Studies in the index",
                                value=f.studies)
        held = GaugeMetricFamily("cloudfilm_ingest_held_objects",
                                 "Objects of the reconciliation queue, by reason and state",
                                 labels=["reason", "state"])
        held_bytes = GaugeMetricFamily("cloudfilm_ingest_held_bytes",
                                       "Bytes of the reconciliation queue, by reason and state",
                                       labels=["reason", "state"])
        for (reason, state), (count, size) in sorted(f.held.items()):
            held.add_metric([reason, state], count)
            held_bytes.add_metric([reason, state], size)
        yield held
        yield held_bytes
        jobs = GaugeMetricFamily("cloudfilm_jobs", "Background jobs by kind and state",
                                 labels=["kind", "state"])
        depth = GaugeMetricFamily("cloudfilm_jobs_queue_depth",
                                  "Jobs waiting or running (pending, queued, cleanup)",
                                  labels=["kind"])
        failed = GaugeMetricFamily("cloudfilm_jobs_failed",
                                   "Jobs that failed for good (dead list)", labels=["kind"])
        kinds: dict[str, list[int]] = {}
        for (kind, state), count in sorted(f.jobs.items()):
            jobs.add_metric([kind, state], count)
            totals = kinds.setdefault(kind, [0, 0])
            if state in ("pending", "queued", "cleanup"):
                totals[0] += count
            elif state == "dead":
                totals[1] += count
        for kind, (waiting, dead) in kinds.items():
            depth.add_metric([kind], waiting)
            failed.add_metric([kind], dead)
        yield jobs
        yield depth
        yield failed
        yield GaugeMetricFamily("cloudfilm_audit_chain_records",
                                "Audit records committed (the chain's length)",
                                value=f.audit_records)


def index_registry(figures: FiguresService) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IndexCollector(figures))
    return registry


def exposition(extra: CollectorRegistry | None) -> bytes:
    """The process's metrics, then the index-wide ones."""
    text = generate_latest()
    return text + generate_latest(extra) if extra is not None else text
