"""A slow WAN link for the gateway's tests and bench: a network namespace (the hospital) joined
to the root namespace (the cloud) by a veth pair, shaped by Linux traffic control.

- Rate: ``tc`` on the veth end inside the namespace, so the hospital's upload is limited
  (``netem rate`` when the kernel has sch_netem, else a token bucket ``tbf``).
- Latency: ``netem delay`` on both ends when available; otherwise (some kernels, e.g. this
  build machine's, ship without sch_netem) the one-way delay is added by the relay below.
- The cloud's address on the link is a relay in the root namespace (``relay()``), listening on
  the veth address and forwarding to the cloud on loopback, like a load balancer in front of
  the cloud; it also adds the one-way delay in each direction when netem cannot.

Needs root (CAP_NET_ADMIN) and iproute2; ``Link.available()`` says why not. Everything is
removed in ``down()`` (deleting the namespace deletes the veth pair).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)


def _ok(*argv: str) -> None:
    done = _run(*argv)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


@dataclass(slots=True)
class Link:
    rate_mbit: float
    rtt_ms: float
    name: str = field(default_factory=lambda: f"cflink{os.getpid() % 100000}"
                                                f"{random.randrange(100)}")
    netem: bool = False
    outer: str = ""
    inner: str = ""
    _relays: list[DelayRelay] = field(default_factory=list)

    def __post_init__(self) -> None:
        taken = _run("ip", "-o", "addr").stdout  # another link of a parallel run
        subnet = random.choice([n for n in range(1, 250) if f"10.231.{n}." not in taken])
        self.outer = f"10.231.{subnet}.1"  # the cloud's side (root namespace)
        self.inner = f"10.231.{subnet}.2"  # the hospital's side (inside the namespace)

    @staticmethod
    def available() -> str | None:
        """None when a link can be made here, else why not."""
        if shutil.which("ip") is None or shutil.which("tc") is None:
            return "iproute2 (ip, tc) is not installed"
        probe = f"cfprobe{os.getpid() % 100000}"
        done = _run("ip", "netns", "add", probe)
        if done.returncode != 0:
            return f"cannot create a network namespace: {done.stderr.strip()}"
        _run("ip", "netns", "del", probe)
        return None

    @property
    def prefix(self) -> tuple[str, ...]:
        """Run a command inside the hospital's namespace."""
        return ("ip", "netns", "exec", self.name)

    @property
    def one_way_s(self) -> float:
        return self.rtt_ms / 2000

    def up(self) -> None:
        inside, outside = f"{self.name}i"[:15], f"{self.name}o"[:15]
        _ok("ip", "netns", "add", self.name)
        try:
            _ok("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            _ok("ip", "link", "set", inside, "netns", self.name)
            _ok("ip", "addr", "add", f"{self.outer}/30", "dev", outside)
            _ok("ip", "link", "set", outside, "up")
            _ok(*self.prefix, "ip", "addr", "add", f"{self.inner}/30", "dev", inside)
            _ok(*self.prefix, "ip", "link", "set", inside, "up")
            _ok(*self.prefix, "ip", "link", "set", "lo", "up")
            half = f"{self.rtt_ms / 2:g}ms"
            rate = f"{self.rate_mbit:g}mbit"
            self.netem = _run(*self.prefix, "tc", "qdisc", "add", "dev", inside, "root",
                              "netem", "delay", half, "rate", rate, "limit", "10000"
                              ).returncode == 0
            if self.netem:
                _ok("tc", "qdisc", "add", "dev", outside, "root", "netem", "delay", half)
            else:
                # One bucket of ~10 ms at the rate; packets queue up to 50 ms before drops.
                burst = max(32_000, int(self.rate_mbit * 1e6 / 8 / 100))
                _ok(*self.prefix, "tc", "qdisc", "add", "dev", inside, "root", "tbf",
                    "rate", rate, "burst", str(burst), "latency", "50ms")
        except BaseException:
            self.down()
            raise

    def relay(self, target_port: int) -> int:
        """A port on the cloud's link address forwarding to 127.0.0.1:target_port."""
        relay = DelayRelay(self.outer, target_port, 0.0 if self.netem else self.one_way_s)
        self._relays.append(relay)
        return relay.port

    def down(self) -> None:
        for relay in self._relays:
            relay.close()
        self._relays.clear()
        _run("ip", "netns", "del", self.name)  # takes the veth pair with it

    def describe(self) -> str:
        how = "netem delay+rate" if self.netem else "tbf rate + relay delay (no sch_netem)"
        return f"{self.rate_mbit:g} Mbit/s, {self.rtt_ms:g} ms RTT ({how})"


@contextlib.contextmanager
def slow_link(rate_mbit: float, rtt_ms: float) -> Iterator[Link]:
    link = Link(rate_mbit, rtt_ms)
    link.up()
    try:
        yield link
    finally:
        link.down()


class DelayRelay:
    """A TCP relay on its own event loop thread; every chunk is held ``delay`` seconds in
    each direction (a pipe with latency: bytes in flight are not limited by the relay)."""

    def __init__(self, host: str, target_port: int, delay: float) -> None:
        self.delay = delay
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self._server = self.loop.run_until_complete(
            asyncio.start_server(self._client, host, 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.target_port), 10)
        except (OSError, TimeoutError):
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)
        for w in (writer, up_writer):
            w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def pump() -> None:
            while True:
                data = await reader.read(256 * 1024)
                held.put_nowait((loop.time() + self.delay, data))
                if not data:
                    return

        async def emit() -> None:
            while True:
                due, data = await held.get()
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        try:
            await asyncio.gather(pump(), emit())
        finally:
            writer.close()

    def close(self) -> None:
        def stop() -> None:
            self._server.close()
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self._thread.join(timeout=10)
