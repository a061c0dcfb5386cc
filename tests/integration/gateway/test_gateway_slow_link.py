"""The gateway forwarding through a slow WAN link (limited rate, added latency) made with a
network namespace, a veth pair and Linux traffic control (link.py).

Skipped where namespaces or ``tc`` are not permitted; under CI=true that is a failure, since
CI runs as root with iproute2 installed (.ci/run).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.factories import to_bytes
from tests.integration.crash.kill9 import Server
from tests.integration.gateway import rig
from tests.integration.gateway.link import Link, slow_link

pytestmark = [pytest.mark.commits, pytest.mark.xdist_group("gateway")]

RATE_MBIT = 8.0
RTT_MS = 60.0


class LinkServer(Server):
    """``cloudfilm serve`` answering for its address on the link (the relay's)."""

    def __init__(self, workdir: Path, host: str) -> None:
        super().__init__(workdir)
        self.link_host = host

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "CLOUDFILM_HTTP__ALLOWED_HOSTS": f'["{self.link_host}"]'}


@pytest.fixture
def link() -> Iterator[Link]:
    why = Link.available()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the slow-link test must run in CI: {why}")
        pytest.skip(why)
    with slow_link(RATE_MBIT, RTT_MS) as made:
        yield made


def test_forwarding_through_a_slow_link(link: Link, tmp_path: Path) -> None:
    (tmp_path / "cloud").mkdir()
    cloud = LinkServer(tmp_path / "cloud", link.outer)
    cloud.prepare()
    cloud.start(timeout=60)
    gw = None
    try:
        before = rig.count_instances(cloud)
        http = link.relay(cloud.http_port)
        (tmp_path / "gw").mkdir()
        # A short timeout: at this rate a batch of 5 takes ~0.7 s plus the round trips.
        gw = rig.Gateway(tmp_path / "gw", f"http://{link.outer}:{http}", cloud.token,
                         host=link.inner, prefix=link.prefix, cloud={"timeout": 2.0},
                         forward={"batch_size": 5, "concurrency": 2})
        gw.start()
        datasets = rig.studies("GW-SLOW", 3, 8, size=256)
        megabytes = sum(len(to_bytes(ds)) for ds in datasets) / 1e6
        sender = rig.Sender(gw.dicom_port, host=link.inner)
        t0 = time.perf_counter()
        sender.send(datasets, deadline=120)  # the PACS's side is not shaped
        gw.wait_drained(timeout=180)
        seconds = time.perf_counter() - t0
    finally:
        if gw is not None:
            gw.stop()
        cloud.stop()
    rate = megabytes * 8 / seconds
    print(f"\nslow link {link.describe()}: {megabytes:.2f} MB in {seconds:.2f} s "
          f"= {rate:.2f} Mbit/s")
    # The link was the bottleneck (the shaping worked) ...
    assert rate <= RATE_MBIT * 1.1, rate
    # ... and everything acknowledged arrived once, identical.
    result = rig.tally(cloud, sender.acked)
    assert result.lost == [] and result.differing == [], result
    assert result.arrived == result.identical == result.acknowledged == len(datasets)
    assert result.duplicated == 0 and result.versions == 0
    assert rig.count_instances(cloud) - before == len(datasets)
