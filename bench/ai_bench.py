"""The sample AI plug-in's figures: sensitivity, false positives and diameter error of the
lung-nodule candidate detector on synthetic chest CT phantoms (``bench/synth.py``) with
spheres of known size and position inserted in the lungs, and its CPU time per series.

Each phantom gets 0-4 nodules of 4-20 mm at random places well inside the lungs (away
from the heart and the chest wall, where this simple method is known not to work); a
detection within 5 mm of a sphere's centre is a hit. A demonstration, not a clinical
validation. Run ``python bench/ai_bench.py --phantoms 30``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cloudfilm.infrastructure.ai.nodules import detect
from synth import make_ct_series

# Lung regions of the phantom (patient mm) where a sphere is surely surrounded by lung:
# (x range, y range) per side, for slices 10-40 of a 50-slice thorax series.
_SIDES = (((-95.0, -55.0), (-40.0, 5.0)), ((90.0, 110.0), (-35.0, 0.0)))


def _nodules(rng: np.random.Generator) -> list[tuple[float, float, float, float]]:
    out: list[tuple[float, float, float, float]] = []
    for _ in range(int(rng.integers(0, 5))):
        for _try in range(20):
            (x0, x1), (y0, y1) = _SIDES[int(rng.integers(0, 2))]
            d = float(rng.uniform(4.0, 20.0 if x0 < 0 else 10.0))
            c = (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)),
                 -float(rng.uniform(25.0, 100.0)), d)
            if all(math.dist(c[:3], o[:3]) > (d + o[3]) / 2 + 8 for o in out):
                out.append(c)
                break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phantoms", type=int, default=30)
    parser.add_argument("--size", type=int, default=128, help="Rows and columns")
    args = parser.parse_args()
    rng = np.random.default_rng(19)
    inserted = hits = false_positives = 0
    errors: list[float] = []
    distances: list[float] = []
    seconds = 0.0
    for seed in range(args.phantoms):
        truth = _nodules(rng)
        series = list(make_ct_series(50, patient_id=f"B{seed}", patient_name="Bench^AI",
                                     size=args.size, slice_thickness=2.5,
                                     t_range=(0.05, 0.4), nodules=truth, seed=seed))
        started = time.process_time()
        found = detect(series)
        seconds += time.process_time() - started
        used: set[int] = set()
        for x, y, z, d in truth:
            inserted += 1
            near = [(math.dist(f.centre_mm, (x, y, z)), i) for i, f in enumerate(found)
                    if i not in used]
            if near and min(near)[0] <= 5.0:
                dist, i = min(near)
                used.add(i)
                hits += 1
                distances.append(dist)
                errors.append(abs(found[i].diameter_mm - d))
        false_positives += len(found) - len(used)
    print(json.dumps({
        "phantoms": args.phantoms, "size": args.size, "slices": 50,
        "inserted": inserted, "found": hits,
        "sensitivity": round(hits / inserted, 3) if inserted else None,
        "false_positives_per_series": round(false_positives / args.phantoms, 3),
        "diameter_error_mm_mean": round(float(np.mean(errors)), 2) if errors else None,
        "diameter_error_mm_max": round(float(np.max(errors)), 2) if errors else None,
        "centre_error_mm_mean": round(float(np.mean(distances)), 2) if distances else None,
        "cpu_seconds_per_series": round(seconds / args.phantoms, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
