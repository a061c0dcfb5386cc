"""kill -9 at scale: thousands of objects over STOW-RS and C-STORE while the server is killed.

The long version of ``tests/integration/crash/test_kill9.py`` (same rig,
``tests/integration/crash/kill9.py``): more senders, more cycles, longer up-times. Prints the
figures and exits non-zero if any promise broke: an acknowledged object missing or different,
an index row without its blob, orphans left after one sweep.

    .venv/bin/python bench/crash_bench.py                          # SQLite, 12 cycles
    .venv/bin/python bench/crash_bench.py --index postgresql --cycles 20
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the rig lives with the tests

from tests.integration.crash import kill9  # noqa: E402

from harness import BENCH_DIR, WORK_DIR, recreate_pg_database  # noqa: E402

PG_DATABASE = "bench_crash"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--up", type=float, nargs=2, default=(2.0, 6.0),
                        metavar=("MIN", "MAX"), help="seconds between a restart and the kill")
    parser.add_argument("--stow", type=int, default=3, help="STOW-RS sender threads")
    parser.add_argument("--dimse", type=int, default=2, help="C-STORE sender threads")
    parser.add_argument("--size", type=int, default=128, help="rows=columns of each CT object")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    args = parser.parse_args()

    url = None
    if args.index == "postgresql":
        recreate_pg_database(PG_DATABASE)
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_DATABASE}"
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="crash-", dir=WORK_DIR))
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    try:
        figures = kill9.run(workdir, database_url=url, cycles=args.cycles,
                            up_seconds=tuple(args.up), stow=args.stow, dimse=args.dimse,
                            size=args.size, seed=args.seed, log=log)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    ok = (not figures.problems and figures.verified == figures.acknowledged
          and figures.rows_without_blob == 0 and figures.orphans_after == 0)
    lines = [
        f"kill -9 bench ({args.index}, seed {args.seed}): {figures.cycles} kills, "
        f"{args.stow} STOW-RS + {args.dimse} C-STORE senders, {args.size}x{args.size} CT",
        f"  send attempts        {figures.attempts}",
        f"  acknowledged         {figures.acknowledged}",
        f"  verified bit-exact   {figures.verified}",
        f"  index rows           {figures.index_rows} ({figures.rows_without_blob} without blob)",
        f"  orphan blobs swept   {figures.orphans_removed} (then {figures.orphans_after})",
        f"  spool files left     {figures.spool_leftovers}",
        f"  wall time            {figures.seconds:.0f} s",
        f"  result               {'OK' if ok else 'BROKEN: ' + '; '.join(figures.problems[:5])}",
    ]
    print("\n".join(lines))
    out = BENCH_DIR / "out"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (out / f"crash-{stamp}.json").write_text(json.dumps(
        {"args": vars(args), "figures": asdict(figures)}, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
