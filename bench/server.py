"""Run ``cloudfilm serve`` for a benchmark, the same way ``orthanc.py`` runs Orthanc.

``with Cloudfilm(index="postgresql") as srv: ...`` starts
``.venv/bin/cloudfilm serve --data DIR --host 127.0.0.1 --port P`` (and its DIMSE listener on
a free loopback port, so that it never meets another cloudfilm on 11112) with a fresh data folder
(and a fresh ``bench_cloudfilm`` database), waits for ``GET /healthz`` to answer 200, and
stops it by PID at exit, recording ``peak_rss`` and ``cpu_total``.
"""

from __future__ import annotations

import base64
import os

from harness import BENCH_DIR, ManagedServer, ServerUnavailable, free_port, recreate_pg_database

EXE = BENCH_DIR.parent / ".venv" / "bin" / "cloudfilm"
DATABASE_URL_ENV = "CLOUDFILM_DATABASE_URL"


class Cloudfilm(ManagedServer):
    """cloudfilm with an empty archive: its embedded SQLite default, or ``index="postgresql"``."""

    name = "cloudfilm"

    def __init__(
        self,
        *,
        index: str = "sqlite",
        pg_database: str = "bench_cloudfilm",
        dicom_port: int | None = None,
        extra_args: tuple[str, ...] = (),
        keep: bool = False,
    ) -> None:
        super().__init__(keep=keep)
        self.index = index
        self.dicom_port = dicom_port or free_port()
        self.extra_args = extra_args
        if index == "postgresql":
            self.pg_database = pg_database

    def prepare(self) -> tuple[list[str], dict[str, str]]:
        if not EXE.exists():
            raise ServerUnavailable(
                f"{EXE} does not exist: the cloudfilm server is not installed yet "
                "(uv sync, and a `cloudfilm serve` command)"
            )
        env: dict[str, str] = {}
        if self.index == "postgresql":
            assert self.pg_database is not None
            recreate_pg_database(self.pg_database)
            env[DATABASE_URL_ENV] = (
                f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.pg_database}"
            )
            # A PostgreSQL deployment must bring its own secrets (no generated defaults).
            for name in ("NATIONAL_ID_KEY", "NATIONAL_ID_HMAC_KEY", "ADMIN_TOKEN"):
                env[f"CLOUDFILM_SECURITY__{name}"] = base64.b64encode(os.urandom(32)).decode()
            # The bench talks as the loopback operator, like Orthanc's open REST API here;
            # a PostgreSQL deployment refuses that unless told to.
            env["CLOUDFILM_SECURITY__LOCAL_MODE"] = "open"
            env["CLOUDFILM_SECURITY__ALLOW_OPEN_LOCAL_MODE"] = "true"
        elif self.index != "sqlite":
            raise ValueError(f"index must be sqlite or postgresql, not {self.index!r}")
        data = self.workdir / "data"
        argv = [str(EXE), "serve", "--data", str(data), "--host", "127.0.0.1",
                "--port", str(self.http_port), "--dicom-host", "127.0.0.1",
                "--dicom-port", str(self.dicom_port), *self.extra_args]
        return argv, env

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/healthz"

    @property
    def dicomweb(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicomweb"


if __name__ == "__main__":  # smoke test: start, check /healthz, stop
    with Cloudfilm() as srv:
        print(f"cloudfilm answers at {srv.dicomweb}")
    print(f"peak RSS {srv.peak_rss / 2**20:.0f} MiB, CPU {srv.cpu_total:.2f} s")
