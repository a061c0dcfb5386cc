"""Run Debian's Orthanc 1.10 with its DICOMweb plugin for a benchmark.

``with Orthanc(index="postgresql") as srv: ...`` starts ``Orthanc CONFIG.json`` with a fresh
storage folder (and a fresh ``bench_orthanc`` database), waits for ``/system``, and stops it
by PID at exit, recording ``peak_rss`` and ``cpu_total``.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path

from harness import ManagedServer, ServerUnavailable, free_port, recreate_pg_database


@functools.cache
def plugin_path(package: str, stem: str) -> str:
    """Path of the plugin ``.so`` that Debian ``package`` installs (``dpkg -L``)."""
    try:
        files = subprocess.run(
            ["dpkg", "-L", package], capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ServerUnavailable(f"Debian package {package} is not installed: {exc}") from exc
    for name in files:
        if Path(name).name.startswith(stem) and ".so" in Path(name).name:
            return name
    raise ServerUnavailable(f"{package} has no {stem}*.so")


class Orthanc(ManagedServer):
    """Orthanc with an empty archive: SQLite index by default, or ``index="postgresql"``.

    ``dicom_port=None`` disables the DICOM listener: Orthanc 1.10 cannot bind it to loopback
    and the DICOMweb benchmark does not need it.
    """

    name = "orthanc"

    def __init__(
        self,
        *,
        index: str = "sqlite",
        dicom_port: int | None = None,
        aet: str = "BENCHORTHANC",
        pg_database: str = "bench_orthanc",
        keep: bool = False,
    ) -> None:
        super().__init__(keep=keep)
        self.index = index
        self.dicom_port = dicom_port
        self.aet = aet
        if index == "postgresql":
            self.pg_database = pg_database

    def prepare(self) -> tuple[list[str], dict[str, str]]:
        exe = shutil.which("Orthanc")
        if exe is None:
            raise ServerUnavailable("Orthanc is not installed (apt-get install orthanc)")
        storage = self.workdir / "storage"
        plugins = [plugin_path("orthanc-dicomweb", "libOrthancDicomWeb")]
        config: dict[str, object] = {
            "Name": "bench",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "SyncStorageArea": True,  # Debian's default: fsync each stored file
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,  # Orthanc 1.10 listens on all interfaces
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "TcpNoDelay": True,
            "WebDavEnabled": False,
            "DicomServerEnabled": self.dicom_port is not None,
            "DicomPort": self.dicom_port or free_port(),
            "DicomAet": self.aet,
            "Plugins": plugins,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": "127.0.0.1"},
        }
        if self.index == "postgresql":
            assert self.pg_database is not None
            recreate_pg_database(self.pg_database)
            plugins.append(plugin_path("orthanc-postgresql", "libOrthancPostgreSQLIndex"))
            config["PostgreSQL"] = {
                "EnableIndex": True,
                "EnableStorage": False,  # files stay on disk, as with SQLite
                "Host": "127.0.0.1",
                "Port": 5432,
                "Database": self.pg_database,
                "Username": "postgres",
                "Password": "",
            }
        elif self.index != "sqlite":
            raise ValueError(f"index must be sqlite or postgresql, not {self.index!r}")
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return [exe, str(path)], {}

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/system"

    @property
    def dicomweb(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"


if __name__ == "__main__":  # smoke test: start, print /system, stop
    import httpx

    with Orthanc() as srv:
        print(httpx.get(srv.health_url).json())
    print(f"peak RSS {srv.peak_rss / 2**20:.0f} MiB, CPU {srv.cpu_total:.2f} s")
