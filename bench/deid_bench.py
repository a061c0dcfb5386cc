"""De-identification throughput: objects/s on one core (one process, one thread).

Synthetic 512x512 CT slices from ``bench/synth.py`` are parsed from bytes, de-identified with
the Annex E profile (modified dates, patient characteristics, clean descriptors) and written
back to bytes, as an export does. Run ``python bench/deid_bench.py --objects 200``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cloudfilm.infrastructure.deid import DeidOptions, Pseudonymiser, deidentify
from synth import make_ct_series, to_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=200)
    args = parser.parse_args()
    blobs = [to_bytes(ds) for ds in make_ct_series(args.objects, patient_id="P1",
                                                    patient_name="Smith^Anna")]
    options = DeidOptions(retain_modified_dates=True, retain_patient_characteristics=True,
                          clean_descriptors=True, age_band_years=5)
    pseudo = Pseudonymiser(b"bench-project-key-0123456789abcdef")
    start = time.perf_counter()
    out_bytes = 0
    for blob in blobs:
        ds = pydicom.dcmread(io.BytesIO(blob))
        result = deidentify(ds, options, pseudo)
        assert result.dataset is not None
        buf = io.BytesIO()
        result.dataset.save_as(buf, enforce_file_format=True)
        out_bytes += buf.tell()
    elapsed = time.perf_counter() - start
    print(json.dumps({"objects": len(blobs), "seconds": round(elapsed, 3),
                      "objects_per_s_per_core": round(len(blobs) / elapsed, 1),
                      "MB_per_s": round(out_bytes / elapsed / 1e6, 1)}))


if __name__ == "__main__":
    main()
