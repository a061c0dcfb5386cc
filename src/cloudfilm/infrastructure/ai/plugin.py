"""The plug-in contract: a callable that takes the data sets of one series and returns
findings (plain data). The platform, not the plug-in, makes the DICOM result from them, so
every result is marked as AI-generated the same way whoever wrote the algorithm.

A plug-in is named by a spec:

- ``entry:<name>``: a Python entry point in the group ``cloudfilm.ai_plugins`` (a vendor's
  package declares ``[project.entry-points."cloudfilm.ai_plugins"] name = "pkg.mod:fn"``);
- ``<module>:<callable>``: a callable named in the configuration (``ai.plugins``);
- ``builtin:lung-nodules``: the sample detector shipped here (a demonstration, not a
  clinical device).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

ENTRY_POINT_GROUP = "cloudfilm.ai_plugins"


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding, located on a source image and in patient coordinates (mm, LPS)."""

    label: str
    """What was found (``nodule``)."""
    centre_mm: tuple[float, float, float]
    diameter_mm: float
    score: float
    """0-1: how sure the method is (the sample's is a shape score, not a probability)."""
    sop_instance_uid: str
    """The source image the centre lies on."""
    row: float
    column: float
    """Pixel position of the centre on that image (0-based, pixel centres)."""


Plugin = Callable[[Sequence[Dataset]], list[Finding]]
"""A plug-in: the data sets of one series (any order) -> its findings."""


class PluginError(Exception):
    """The plug-in spec names nothing loadable."""


def load(spec: str) -> Plugin:
    """The callable a spec names (see the module's docstring).

    Raises
    ------
    PluginError
        Unknown builtin, no such entry point, module or attribute, or not callable.
    """
    if spec == "builtin:lung-nodules":
        from cloudfilm.infrastructure.ai.nodules import detect

        return detect
    if spec.startswith("entry:"):
        name = spec.removeprefix("entry:")
        found = [e for e in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
                 if e.name == name]
        if not found:
            raise PluginError(f"no entry point {name!r} in group {ENTRY_POINT_GROUP}")
        target = found[0].load()
    else:
        module, _, attr = spec.partition(":")
        if not module or not attr:
            raise PluginError(f"a plug-in spec is entry:<name>, builtin:<name> or "
                              f"module:callable, not {spec!r}")
        try:
            target = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"cannot load {spec!r}: {exc}") from exc
    if not callable(target):
        raise PluginError(f"{spec!r} is not callable")
    return target  # type: ignore[no-any-return]
