"""A QUIC connection that records everything that happens on it (stream data, resets, its
end and who ended it), and one-line descriptions of those outcomes."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from aioquic.tls import SessionTicket

from cluster import Target
from wire_format import parse_reply


# How long one step of an attack may take before it counts as "nothing happened".
STEP_TIMEOUT = 15.0
# How long a handshake may take on one machine.
CONNECT_TIMEOUT = 5.0
# QUIC transport error codes (RFC 9000, 20.1) that the server may close with.
TRANSPORT_ERRORS = {
    0x0: "NO_ERROR",
    0x1: "INTERNAL_ERROR",
    0x2: "CONNECTION_REFUSED",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "STREAM_LIMIT_ERROR",
    0x5: "STREAM_STATE_ERROR",
    0x7: "FRAME_ENCODING_ERROR",
    0x8: "TRANSPORT_PARAMETER_ERROR",
    0xA: "PROTOCOL_VIOLATION",
}
# TLS alerts (RFC 8446, 6) a refused handshake may carry, as CRYPTO_ERROR 0x100 + alert.
TLS_ALERTS = {
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    46: "certificate_unknown",
    48: "unknown_ca",
    49: "access_denied",
    51: "decrypt_error",
    80: "internal_error",
    109: "missing_extension",
    116: "certificate_required",
    120: "no_application_protocol",
}


@dataclass
class StreamState:
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset_code: int | None = None
    stop_code: int | None = None
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None

    @property
    def done(self) -> bool:
        return self.ended or self.reset_code is not None


CLOSED_STATES = (
    QuicConnectionState.CLOSING,
    QuicConnectionState.DRAINING,
    QuicConnectionState.TERMINATED,
)


class Connection(QuicConnectionProtocol):
    """aioquic's protocol, recording stream data, resets and the connection's end."""

    def __init__(self, quic: QuicConnection, **kwargs) -> None:
        super().__init__(quic, **kwargs)
        self.streams: dict[int, StreamState] = {}
        self.terminated: ConnectionTerminated | None = None
        # Whether the server's CONNECTION_CLOSE began the end (aioquic drains), rather than
        # aioquic itself (it closes) or a timeout. aioquic says so only to its close timer.
        self.closed_by_server = False
        begin_close = quic._close_begin

        def record_close(is_initiator: bool, now: float) -> None:
            if self.terminated is None and quic._state not in CLOSED_STATES:
                self.closed_by_server = not is_initiator
            begin_close(is_initiator=is_initiator, now=now)

        quic._close_begin = record_close
        self.handshake: HandshakeCompleted | None = None
        self._changed = asyncio.Event()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            stream = self.streams.setdefault(event.stream_id, StreamState())
            stream.data += event.data
            if event.end_stream:
                stream.ended = True
                stream.closed_at = time.monotonic()
        elif isinstance(event, StreamReset):
            stream = self.streams.setdefault(event.stream_id, StreamState())
            stream.reset_code = event.error_code
            stream.closed_at = time.monotonic()
        elif isinstance(event, StopSendingReceived):
            self.streams.setdefault(event.stream_id, StreamState()).stop_code = event.error_code
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
        elif isinstance(event, HandshakeCompleted):
            self.handshake = event
        self._changed.set()

    async def until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Waits until `condition()` holds or the connection ends; false after `timeout`."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.terminated is not None:
                return condition()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return condition()
        return True

    def send(self, data: bytes, end: bool = True, unidirectional: bool = False) -> int:
        """Opens a stream, writes `data` on it (and FIN with `end`), returns its id."""
        stream_id = self._quic.get_next_available_stream_id(is_unidirectional=unidirectional)
        self.streams[stream_id] = StreamState()
        self._quic.send_stream_data(stream_id, data, end_stream=end)
        self.transmit()
        return stream_id

    async def request(self, data: bytes, timeout: float = STEP_TIMEOUT) -> str:
        """Sends one request and describes how its stream ended."""
        stream_id = self.send(data)
        stream = self.streams[stream_id]
        await self.until(lambda: stream.done, timeout)
        return describe_stream(stream, self)

    async def shut(self) -> None:
        self.close()
        try:
            await asyncio.wait_for(self.wait_closed(), 2)
        except TimeoutError:
            pass
        if self._transport is not None:
            self._transport.close()


def describe_close(connection: Connection) -> str:
    """How a connection ended, and whether the server ended it or this peer did."""
    event = connection.terminated
    if event is None:
        return "connection still open"
    code = event.error_code
    by = "" if connection.closed_by_server else " (raised by this peer, not the server)"
    reason = f" ({event.reason_phrase})" if event.reason_phrase else ""
    if event.frame_type is None:
        return f"connection closed: application code {code}{reason}{by}"
    if 0x100 <= code < 0x200:
        alert = code - 0x100
        return f"TLS alert {alert} {TLS_ALERTS.get(alert, 'unknown')}{reason}{by}"
    return f"connection closed: {TRANSPORT_ERRORS.get(code, hex(code))}{reason}{by}"


def describe_stream(stream: StreamState, connection: Connection) -> str:
    reply = parse_reply(bytes(stream.data))
    if stream.reset_code is not None:
        what = f"stream reset with code {stream.reset_code}"
        return f"{what} after a partial reply" if stream.data else what
    if stream.ended:
        return reply.describe() if reply else f"stream finished after {len(stream.data)} bytes"
    if connection.terminated is not None:
        return describe_close(connection)
    return "no reply"


async def connect(
    target: Target,
    config: QuicConfiguration,
    local_host: str = "127.0.0.1",
    wait: bool = True,
    ticket_handler: Callable[[SessionTicket], None] | None = None,
) -> Connection:
    """Opens a connection from `local_host` (any 127/8 address is this machine)."""
    loop = asyncio.get_running_loop()
    quic = QuicConnection(configuration=config, session_ticket_handler=ticket_handler)
    _, protocol = await loop.create_datagram_endpoint(
        lambda: Connection(quic), local_addr=(local_host, 0)
    )
    if wait:
        protocol.connect((target.host, target.port), transmit=True)
        await asyncio.wait_for(protocol.wait_connected(), CONNECT_TIMEOUT)
    return protocol
