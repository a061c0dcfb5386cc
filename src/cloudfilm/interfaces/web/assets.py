"""The front-end build's manifest: entry name -> hashed file names under /static/dist/.

``make install`` builds ``web/`` with Vite into ``static/dist/``; the manifest is read once
when the app is built. Without a build the pages still render (without script or style)
and say how to build, instead of failing at import.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import orjson

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
DIST_DIR = STATIC_DIR / "dist"
PREFIX = "/static/dist/"


@dataclass(frozen=True, slots=True)
class Entry:
    script: str
    styles: tuple[str, ...]
    imports: tuple[str, ...] = ()  # the chunks it imports statically, transitively


class Assets:
    """Script and stylesheet URLs of each entry (``portal``, ``viewer``, ``axe``)."""

    def __init__(self, dist: Path = DIST_DIR) -> None:
        self.entries: dict[str, Entry] = {}
        manifest = dist / ".vite" / "manifest.json"
        try:
            data = orjson.loads(manifest.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            logger.warning("cloudfilm.web.no_build",
                           extra={"fix": "run `make install` (npm ci && npm run build in web/)"})
            return
        for chunk in data.values():
            if chunk.get("isEntry"):
                self.entries[chunk["name"]] = Entry(
                    PREFIX + chunk["file"], tuple(PREFIX + c for c in chunk.get("css", ())),
                    tuple(PREFIX + data[k]["file"] for k in _imports(data, chunk)))

    @property
    def built(self) -> bool:
        return bool(self.entries)

    def script(self, name: str) -> str | None:
        entry = self.entries.get(name)
        return entry.script if entry else None

    def styles(self, name: str) -> tuple[str, ...]:
        entry = self.entries.get(name)
        return entry.styles if entry else ()

    def imports(self, name: str) -> tuple[str, ...]:
        """The chunks an entry's script imports (for ``<link rel="modulepreload">``: the
        browser asks for them with the page instead of after reading the script)."""
        entry = self.entries.get(name)
        return entry.imports if entry else ()


def _imports(data: dict[str, dict[str, object]], chunk: dict[str, object]) -> list[str]:
    """Manifest keys of the chunks ``chunk`` imports statically, depth first, each once."""
    seen: list[str] = []
    stack = list(cast(list[str], chunk.get("imports", [])))
    while stack:
        key = stack.pop(0)
        if key in seen or key not in data:
            continue
        seen.append(key)
        stack.extend(cast(list[str], data[key].get("imports", [])))
    return seen
