"""The server's half of the viewer's AI overlay: decoding a stored SEG into the mask runs
the browser paints (``infrastructure/ai/seg.mask_runs``, highdicom), and the size of that
answer, for the demo's chest CT (256x256x40 with its findings) and the test phantom
(128x128x40, one nodule). The browser's half (fetch + Cornerstone labelmap + render) is
measured by ``tests/interop/test_ai_viewer_chromium.py`` (``window.cloudfilmViewer.ai()
.renderMs``, written to tests/artifacts/ai/overlay-render-ms.txt).

Run ``python bench/ai_overlay_bench.py --rounds 7`` (under the bench lock).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cloudfilm.demo.objects import exam_datasets
from cloudfilm.demo.province import ai_demo_exam, build_province
from cloudfilm.infrastructure.ai.nodules import detect
from cloudfilm.infrastructure.ai.seg import mask_runs, segmentation
from cloudfilm.infrastructure.ai.sr import AlgorithmInfo
from synth import make_ct_series

INFO = AlgorithmInfo(name="lung-nodules", version="0.1", vendor="bench", device_uid="1.2.3")


def _seg(series: list[pydicom.Dataset]) -> tuple[pydicom.Dataset, int]:
    findings = detect(series)
    ds = segmentation(series, findings, INFO, series_uid="1.2.3.4", sop_uid="1.2.3.5")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue())), len(findings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    exam = ai_demo_exam(build_province("small", seed=2024, anchor=datetime(2026, 12, 1, 10)))
    assert exam is not None
    demo = [d for d in exam_datasets(exam, 2024) if "AXIAL" in list(d.ImageType)]
    phantom = list(make_ct_series(40, patient_id="B", patient_name="B^B", size=128,
                                  slice_thickness=2.5, t_range=(0.05, 0.4),
                                  nodules=[(-70.0, -20.0, -40.0, 12.0)]))
    out = {}
    for name, series in (("demo 256x256x40", demo), ("phantom 128x128x40", phantom)):
        seg, findings = _seg(series)
        times = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            runs = mask_runs(seg)
            times.append((time.perf_counter() - started) * 1000)
        out[name] = {"findings": findings, "median_ms": round(statistics.median(times), 1),
                     "min_ms": round(min(times), 1), "answer_bytes": len(json.dumps(runs))}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
