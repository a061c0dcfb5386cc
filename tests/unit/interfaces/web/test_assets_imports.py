"""An entry's static imports, read from the Vite manifest, for the viewer page's
``<link rel="modulepreload">`` tags: transitive, each once, never a dynamic import."""

from __future__ import annotations

from pathlib import Path

import orjson

from cloudfilm.interfaces.web.assets import Assets


def test_imports_are_transitive_and_leave_dynamic_imports_out(tmp_path: Path) -> None:
    manifest = {
        "_runtime.js": {"file": "assets/runtime-1.js", "name": "runtime"},
        "_order.js": {"file": "assets/order-2.js", "name": "order", "imports": ["_runtime.js"]},
        "codec.js": {"file": "assets/codec-3.js", "name": "codec", "isDynamicEntry": True},
        "src/main.ts": {"file": "assets/main-4.js", "name": "main", "isEntry": True,
                        "imports": ["_order.js", "_runtime.js"],
                        "dynamicImports": ["codec.js"], "css": ["assets/main-5.css"]},
        "src/boot.ts": {"file": "assets/boot-6.js", "name": "boot", "isEntry": True},
    }
    (tmp_path / ".vite").mkdir()
    (tmp_path / ".vite" / "manifest.json").write_bytes(orjson.dumps(manifest))
    assets = Assets(tmp_path)

    assert assets.imports("main") == ("/static/dist/assets/order-2.js",
                                      "/static/dist/assets/runtime-1.js")
    assert assets.imports("boot") == ()
    assert assets.imports("missing") == ()
    assert assets.script("main") == "/static/dist/assets/main-4.js"
