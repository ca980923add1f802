"""Memory under load: an edge holds 200 connections and 1,000 open streams (silent ones and
slow readers) while its resident memory is sampled from /proc, then the peer disconnects and
the memory must come back near where it was."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from attacks import KNOWN_IMAGE, Context, still_serves
from cluster import Credentials, Limits, Target, configuration
from quic_connection import STEP_TIMEOUT, Connection, StreamState, connect
from wire_format import get_image


def resident_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError as error:
        raise RuntimeError(f"reading the memory of process {pid}: {error}") from error
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


@dataclass
class LoadReport:
    idle_mib: float
    peak_mib: float
    after_mib: float
    limit_mib: int
    return_bound_mib: float
    connections_open: int
    silent_reset: int
    slow_reset: int
    served_under_load: str
    returned: bool
    checks: list[tuple[str, bool]]

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.checks)


# Addresses the load comes from: each stays under the edge's per-peer connection bound.
LOAD_SOURCES = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"]
LOAD_CONNECTIONS = 200
LOAD_STREAMS = 1000
# Of each connection's five streams, this many request an image and read it slowly; the rest
# send two bytes of a header and nothing more.
SLOW_STREAMS_PER_CONNECTION = 2
# Receive window of a slow reader: it takes the first 64 KiB and never grants more.
SLOW_READER_WINDOW = 64 * 1024
# An image of a few MB, so a slow reader can hold the server to its stall bound.
LOAD_IMAGE = 1000
# How far above idle the node may stay once the load is gone: the allocator keeps some of
# what it freed (glibc arenas), but nothing proportional to the load may remain.
RETURN_BOUND_MIB = 32.0
# How long the node may take to release the load's memory after the peer disconnects.
RETURN_DEADLINE = 30.0
# How late past a server's bound a reset may arrive here: this one Python thread opens 1,000
# streams on 200 connections and only then reads what arrived.
LATENESS_S = 3.0


def longest_held(streams: list[StreamState]) -> float:
    """The longest time from opening one of `streams` to its end (inf if one never ended)."""
    return max(
        ((s.closed_at - s.opened_at) if s.closed_at is not None else float("inf"))
        for s in streams
    )


async def load(target: Target, credentials: Credentials, limits: Limits, pid: int,
               limit_mib: int) -> LoadReport:
    warm = await connect(target, configuration(target, credentials))
    try:
        await warm.request(get_image(LOAD_IMAGE))
        await warm.request(get_image(KNOWN_IMAGE))
    finally:
        await warm.shut()
    idle = resident_mib(pid)
    samples = [idle]
    sampling = True

    async def sample() -> None:
        while sampling:
            samples.append(resident_mib(pid))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    per_source = LOAD_CONNECTIONS // len(LOAD_SOURCES)
    connections: list[Connection] = []
    try:
        for source in LOAD_SOURCES:
            batch = await asyncio.gather(
                *(
                    connect(
                        target,
                        configuration(target, credentials, max_stream_data=SLOW_READER_WINDOW),
                        local_host=source,
                    )
                    for _ in range(per_source)
                )
            )
            connections.extend(batch)
        streams_per_connection = LOAD_STREAMS // LOAD_CONNECTIONS
        silent: list[StreamState] = []
        slow: list[StreamState] = []
        for connection in connections:
            # A slow reader grants no credit beyond its first window.
            connection._quic._write_stream_limits = lambda *args, **kwargs: None
            for index in range(streams_per_connection):
                if index < SLOW_STREAMS_PER_CONNECTION:
                    slow.append(connection.streams[connection.send(get_image(LOAD_IMAGE))])
                else:
                    silent.append(connection.streams[connection.send(b"\0\0", end=False)])
        served_under_load = await still_serves(Context(target, credentials, {}, limits))
        bound = limits.header_timeout_s + STEP_TIMEOUT
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline and not all(s.done for s in silent + slow):
            await asyncio.sleep(0.1)
        open_now = sum(1 for c in connections if c.terminated is None)
        silent_reset = sum(1 for s in silent if s.reset_code == 0)
        slow_reset = sum(1 for s in slow if s.reset_code == limits.reset_stalled)
        # A slow reader must have been sent part of its image before the reset, or it was
        # refused rather than held.
        slow_started = sum(1 for s in slow if len(s.data) > 0)
        silent_held = longest_held(silent)
        slow_held = longest_held(slow)
    finally:
        await asyncio.gather(*(c.shut() for c in connections))
    peak = max(samples)
    deadline = time.monotonic() + RETURN_DEADLINE
    after = resident_mib(pid)
    while after > idle + RETURN_BOUND_MIB and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        after = resident_mib(pid)
    sampling = False
    await sampler
    peak = max(samples + [peak])
    returned = after <= idle + RETURN_BOUND_MIB
    checks = [
        (f"{LOAD_CONNECTIONS} connections held open", open_now == LOAD_CONNECTIONS),
        (f"{len(silent)} silent streams reset (code 0)", silent_reset == len(silent)),
        (
            f"{len(silent)} silent streams held at most {silent_held:.1f} s "
            f"(header timeout {limits.header_timeout_s:.0f} s)",
            silent_held <= limits.header_timeout_s + LATENESS_S,
        ),
        (
            f"{len(slow)} slow readers reset (code {limits.reset_stalled})",
            slow_reset == len(slow),
        ),
        (f"{slow_started} of {len(slow)} slow readers got part of an image first",
         slow_started == len(slow)),
        (
            f"slow readers held at most {slow_held:.1f} s "
            f"(reply deadline {limits.reply_send_deadline_s:.0f} s)",
            slow_held <= limits.reply_send_deadline_s + LATENESS_S,
        ),
        ("a request served under load", served_under_load.startswith(f"image {KNOWN_IMAGE} (")),
        (f"peak below the {limit_mib} MiB container limit", peak < limit_mib),
        (f"back within {RETURN_BOUND_MIB:.0f} MiB of idle", returned),
    ]
    return LoadReport(idle, peak, after, limit_mib, RETURN_BOUND_MIB, open_now, silent_reset,
                      slow_reset, served_under_load, returned, checks)
