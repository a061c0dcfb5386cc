"""The AI assistance services the doors share: the algorithm registry and the work."""

from __future__ import annotations

from dataclasses import dataclass

from cloudfilm.services.ai.registry import AlgorithmRegistry
from cloudfilm.services.ai.results import AiResults
from cloudfilm.services.ai.subscriptions import UpsEvents
from cloudfilm.services.ai.worklist import AiWork


@dataclass(frozen=True, slots=True)
class AiService:
    registry: AlgorithmRegistry
    work: AiWork
    results: AiResults
    """Finding sets by version for the viewer, confirmed ones for the portal."""
    events: UpsEvents
    """UPS subscriptions and the event reports to this process's WebSockets."""
