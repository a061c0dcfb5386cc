"""Prometheus metrics of the ingest pipeline, by door (bounded label sets: no UIDs, no
hospital codes), observed once per ``ingest_files`` call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Histogram

# The doors a Sender names; anything else is counted as "other" so that a new caller
# cannot grow the label set.
DOORS = frozenset({"stow-rs", "c-store", "import", "gateway", "reconcile"})
OUTCOMES = ("stored", "duplicate", "replaced", "held", "failed")

OBJECTS = Counter("cloudfilm_ingest_objects_total", "Objects received, by door and outcome",
                  ["door", "outcome"])
BYTES = Counter("cloudfilm_ingest_bytes_total",
                "Bytes of objects stored, replaced or held, by door", ["door"])
LATENCY = Histogram(
    "cloudfilm_ingest_seconds",
    "Time to store and index one batch (one STOW-RS request, one C-STORE, one imported "
    "file), by door",
    ["door"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))


def door_label(door: str) -> str:
    return door if door in DOORS else "other"


def observe(door: str, results: Sequence[Any], seconds: float) -> None:
    """Count one batch's results (StoredInstance or an error) and its latency."""
    label = door_label(door)
    counts = dict.fromkeys(OUTCOMES, 0)
    size = 0
    for result in results:
        outcome = getattr(result, "outcome", None)
        if outcome is None:
            counts["failed"] += 1
            continue
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome != "duplicate":
            size += int(getattr(result, "size", 0))
    for outcome, n in counts.items():
        if n:
            OBJECTS.labels(label, outcome).inc(n)
    if size:
        BYTES.labels(label).inc(size)
    LATENCY.labels(label).observe(seconds)
