"""Prometheus metrics of the DIMSE listeners: associations accepted, rejected, aborted and
open now (no AE titles in labels: the set of calling AEs is unbounded)."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from prometheus_client import Counter, Gauge

ASSOCIATIONS = Counter("cloudfilm_dimse_associations_total", "DIMSE associations accepted")
REJECTED = Counter("cloudfilm_dimse_associations_rejected_total",
                   "DIMSE associations rejected (unknown AE title, address, TLS, limit)")
ABORTED = Counter("cloudfilm_dimse_associations_aborted_total", "DIMSE associations aborted")
ACTIVE = Gauge("cloudfilm_dimse_associations_active", "DIMSE associations open now")

# Listeners of this process; the gauge sums their live associations when scraped, so it
# cannot drift the way inc/dec pairs do when an association dies without an event.
_servers: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()


def _active() -> float:
    with _lock:
        servers = list(_servers)
    return float(sum(len(s.active_associations) for s in servers))


ACTIVE.set_function(_active)


def watch(server: Any) -> None:
    """Count ``server``'s open associations in the gauge (until it is collected)."""
    with _lock:
        _servers.add(server)


def forget(server: Any) -> None:
    with _lock:
        _servers.discard(server)
