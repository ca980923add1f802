"""The attacks. Each opens its own connections, does something a well-behaved peer would
not, and returns one line saying what the server did; [`ATTACKS`] pairs each with the line
expected (a regular expression over the bounds of `wire::limits`)."""

from __future__ import annotations

import asyncio
import datetime
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import cbor2
from aioquic import tls
from aioquic.quic.configuration import QuicConfiguration
from aioquic.tls import SessionTicket
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster import Credentials, Limits, Target, configuration
from quic_connection import (
    CONNECT_TIMEOUT,
    STEP_TIMEOUT,
    Connection,
    connect,
    describe_close,
    describe_stream,
)
from wire_format import frame, get_image, image_size


# The common name of every cluster CA (`wire::pki`); an impostor CA takes it too.
CLUSTER_CA_NAME = "Flotilla cluster CA"
# An image every sample cluster has (ids 1..=1000); the health check fetches it.
KNOWN_IMAGE = 123
# aioquic's value meaning "early data allowed" in a session ticket (RFC 9001, 4.6.1).
QUIC_EARLY_DATA = 0xFFFFFFFF


@dataclass
class Context:
    target: Target
    credentials: Credentials
    # Client certificates from CAs the cluster does not trust: "impostor" (a CA named as
    # the cluster's) and "stranger" (another name).
    foreign: dict[str, Credentials]
    limits: Limits

    def config(self, **kwargs) -> QuicConfiguration:
        return configuration(self.target, self.credentials, **kwargs)


async def handshake_outcome(target: Target, config: QuicConfiguration) -> str:
    """What a server does with a handshake: refuses it, or serves a request after it."""
    connection = await connect(target, config, wait=False)
    try:
        connection.connect((target.host, target.port), transmit=True)
        try:
            await asyncio.wait_for(connection.wait_connected(), CONNECT_TIMEOUT)
        except ConnectionError:
            return f"handshake refused: {describe_close(connection)}"
        except TimeoutError:
            return "no handshake within the connect timeout"
        # TLS 1.3 clients finish before the server has checked their certificate: a refusal
        # arrives as a close right after, so ask for something and see which comes first.
        answer = await connection.request(get_image(KNOWN_IMAGE))
        if connection.terminated is not None:
            return f"refused after the handshake: {describe_close(connection)}"
        return f"served: {answer}"
    finally:
        await connection.shut()


async def no_client_certificate(ctx: Context) -> str:
    bare = Credentials(ctx.credentials.ca, None, None)
    return await handshake_outcome(ctx.target, configuration(ctx.target, bare))


async def foreign_certificate(ctx: Context, which: str) -> str:
    """Presents a certificate of a foreign CA (and still checks the server's against ours)."""
    foreign = ctx.foreign[which]
    presented = Credentials(ctx.credentials.ca, foreign.cert, foreign.key)
    return await handshake_outcome(ctx.target, configuration(ctx.target, presented))


async def impostor_ca_certificate(ctx: Context) -> str:
    return await foreign_certificate(ctx, "impostor")


async def stranger_ca_certificate(ctx: Context) -> str:
    return await foreign_certificate(ctx, "stranger")


async def wrong_alpn(ctx: Context) -> str:
    return await handshake_outcome(ctx.target, ctx.config(alpn=["h3"]))


async def no_alpn(ctx: Context) -> str:
    return await handshake_outcome(ctx.target, ctx.config(alpn=None))


async def zero_rtt_early_data(ctx: Context) -> str:
    """A first session collects tickets; a second resumes with one and sends a request as
    0-RTT early data. A ticket that does not allow early data is forced to claim it does,
    as an attacker would, so the server's refusal is what is tested, not aioquic's manners."""
    tickets: list[SessionTicket] = []
    first = await connect(ctx.target, ctx.config(), ticket_handler=tickets.append)
    try:
        await first.request(get_image(KNOWN_IMAGE))
        await first.until(lambda: bool(tickets), 2)
    finally:
        await first.shut()
    if not tickets:
        return "no session ticket issued: nothing to resume, no 0-RTT possible"
    ticket = tickets[-1]
    offered = ticket.max_early_data_size
    ticket.max_early_data_size = QUIC_EARLY_DATA
    second = await connect(ctx.target, ctx.config(ticket=ticket), wait=False)
    try:
        quic = second._quic
        quic.connect((ctx.target.host, ctx.target.port), now=time.monotonic())
        # The ticket carries no transport parameters without early data, so grant ourselves
        # the stream and credit a 0-RTT client would remember.
        quic._remote_max_streams_bidi = max(quic._remote_max_streams_bidi, 4)
        quic._remote_max_data = max(quic._remote_max_data, 1 << 20)
        quic._remote_max_stream_data_bidi_remote = max(
            quic._remote_max_stream_data_bidi_remote, 1 << 20
        )
        stream_id = second.send(get_image(KNOWN_IMAGE))
        sent_early = quic._cryptos[tls.Epoch.ZERO_RTT].send.is_valid()
        try:
            await asyncio.wait_for(second.wait_connected(), CONNECT_TIMEOUT)
        except (ConnectionError, TimeoutError):
            return f"resumption refused: {describe_close(second)}"
        handshake = second.handshake
        stream = second.streams[stream_id]
        await second.until(lambda: stream.done, STEP_TIMEOUT)
        accepted = "accepted" if handshake and handshake.early_data_accepted else "rejected"
        resumed = "resumed" if handshake and handshake.session_resumed else "not resumed"
        allowed = "allows" if offered == QUIC_EARLY_DATA else "does not allow"
        if not sent_early:
            return f"ticket {allowed} early data; aioquic sent none despite the forced ticket"
        return (
            f"ticket {allowed} early data; forced early data sent and {accepted}, session "
            f"{resumed}; the request: {describe_stream(stream, second)}"
        )
    finally:
        await second.shut()


async def garbage_on_a_stream(ctx: Context) -> str:
    connection = await connect(ctx.target, ctx.config())
    try:
        garbage = (8).to_bytes(4, "big") + bytes([0xFF, 0x13, 0x00, 0xBA, 0xAD, 0xF0, 0x0D, 0x99])
        return await connection.request(garbage)
    finally:
        await connection.shut()


async def length_prefix_of_4_gb(ctx: Context) -> str:
    connection = await connect(ctx.target, ctx.config())
    try:
        return await connection.request((0xFFFFFFFF).to_bytes(4, "big") + b"\0" * 64)
    finally:
        await connection.shut()


def padded_get_image(total: int) -> bytes:
    """A GetImage header of exactly `total` CBOR bytes: an unknown field pads it (serde
    ignores fields it does not know)."""
    for pad in range(total, 0, -1):
        header = {"GetImage": {"id": KNOWN_IMAGE, "pad": b"\0" * pad}}
        if len(cbor2.dumps(header)) == total:
            return frame(header)
    raise RuntimeError(f"no padding makes a {total}-byte header")


async def header_at_the_limit(ctx: Context) -> str:
    connection = await connect(ctx.target, ctx.config())
    try:
        return await connection.request(padded_get_image(ctx.limits.max_header_bytes))
    finally:
        await connection.shut()


async def header_one_byte_over(ctx: Context) -> str:
    connection = await connect(ctx.target, ctx.config())
    try:
        return await connection.request(padded_get_image(ctx.limits.max_header_bytes + 1))
    finally:
        await connection.shut()


async def silent_stream(ctx: Context) -> str:
    """Two bytes of a length prefix, then nothing (the stream must carry a byte to exist)."""
    connection = await connect(ctx.target, ctx.config())
    try:
        stream_id = connection.send(b"\0\0", end=False)
        stream = connection.streams[stream_id]
        await connection.until(lambda: stream.done, ctx.limits.header_timeout_s + STEP_TIMEOUT)
        waited = (stream.closed_at or time.monotonic()) - stream.opened_at
        return f"{describe_stream(stream, connection)} after {round(waited)} s"
    finally:
        await connection.shut()


async def unidirectional_stream(ctx: Context) -> str:
    """The server allows no unidirectional streams; open one anyway."""
    connection = await connect(ctx.target, ctx.config())
    try:
        granted = connection._quic._remote_max_streams_uni
        connection._quic._remote_max_streams_uni = 4
        connection.send(get_image(KNOWN_IMAGE), unidirectional=True)
        await connection.until(lambda: connection.terminated is not None, STEP_TIMEOUT)
        return f"{granted} granted; {describe_close(connection)}"
    finally:
        await connection.shut()


async def thousand_streams(ctx: Context) -> str:
    """1,000 requests at once on one connection, within what the server grants. They ask for
    a size, not an image: a thousand image replies at once would outrun this Python reader
    and meet the server's pace bound (the load test below holds slow readers on purpose)."""
    connection = await connect(ctx.target, ctx.config())
    try:
        granted = connection._quic._remote_max_streams_bidi
        ids = [connection.send(image_size(KNOWN_IMAGE)) for _ in range(1000)]
        streams = [connection.streams[i] for i in ids]
        await connection.until(lambda: all(s.done for s in streams), 60)
        served = 0
        outcomes: dict[str, int] = {}
        for stream in streams:
            outcome = describe_stream(stream, connection).split(" (")[0]
            if outcome.startswith(f"size {KNOWN_IMAGE}: "):
                served += 1
            else:
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        others = "".join(f"; {count} {outcome}" for outcome, count in sorted(outcomes.items()))
        return f"{granted} streams granted; {served} of 1000 requests served{others}"
    finally:
        await connection.shut()


async def streams_past_the_limit(ctx: Context) -> str:
    """Ignores the server's stream limit: one more silent stream than it granted."""
    connection = await connect(ctx.target, ctx.config())
    try:
        granted = connection._quic._remote_max_streams_bidi
        connection._quic._remote_max_streams_bidi = granted + 16
        for _ in range(granted + 1):
            connection.send(b"\0", end=False)
        await connection.until(lambda: connection.terminated is not None, STEP_TIMEOUT)
        return f"{granted + 1} streams opened: {describe_close(connection)}"
    finally:
        await connection.shut()


async def two_hundred_connections(ctx: Context) -> str:
    """200 connections at once from one address with the client certificate."""
    connections = await asyncio.gather(
        *(connect(ctx.target, ctx.config()) for _ in range(200)), return_exceptions=True
    )
    opened = [c for c in connections if isinstance(c, Connection)]
    try:
        limit = ctx.target.connections_per_peer

        async def settled() -> bool:
            deadline = time.monotonic() + STEP_TIMEOUT
            while time.monotonic() < deadline:
                if sum(1 for c in opened if c.terminated is None) <= limit:
                    return True
                await asyncio.sleep(0.05)
            return False

        await settled()
        still_open = [c for c in opened if c.terminated is None]
        closes = {describe_close(c) for c in opened if c.terminated is not None}
        answers = await asyncio.gather(*(c.request(get_image(KNOWN_IMAGE)) for c in still_open))
        served = sum(1 for answer in answers if answer.startswith(f"image {KNOWN_IMAGE} ("))
        return (
            f"{len(opened)} handshakes, {len(still_open)} left open, "
            f"{len(opened) - len(still_open)} {' / '.join(sorted(closes)) or 'closed'}; "
            f"{served} of those left open served"
        )
    finally:
        await asyncio.gather(*(c.shut() for c in opened))


@dataclass
class Attack:
    name: str
    run: Callable[[Context], Awaitable[str]]
    expected: Callable[[Context], str]


# The rest of a close's description, provided the server closed (not aioquic, not a timeout).
BY_THE_SERVER = r"(?!.*raised by this peer).*"


def refused_by_tls(alerts: str) -> Callable[[Context], str]:
    return lambda ctx: (
        rf"(handshake refused|refused after the handshake): TLS alert ({alerts}) {BY_THE_SERVER}"
    )


ATTACKS = [
    Attack("no client certificate", no_client_certificate, refused_by_tls("116")),
    Attack(
        "cert from a foreign CA named as ours", impostor_ca_certificate, refused_by_tls("51")
    ),
    Attack("cert from a foreign CA", stranger_ca_certificate, refused_by_tls("48")),
    Attack("wrong ALPN (h3)", wrong_alpn, refused_by_tls("120")),
    Attack("no ALPN", no_alpn, refused_by_tls("120")),
    Attack(
        "0-RTT early data after a first session",
        zero_rtt_early_data,
        lambda ctx: r"ticket does not allow early data; forced early data sent and rejected, .*",
    ),
    Attack(
        "garbage on a stream",
        garbage_on_a_stream,
        lambda ctx: r"error reply BadRequest: the header is not a valid Flotilla message: .*",
    ),
    Attack(
        "length prefix of 4 GB",
        length_prefix_of_4_gb,
        lambda ctx: (
            rf"error reply BadRequest: header of 4294967295 bytes exceeds the limit of "
            rf"{ctx.limits.max_header_bytes} bytes"
        ),
    ),
    Attack(
        "header exactly at the limit",
        header_at_the_limit,
        lambda ctx: rf"image {KNOWN_IMAGE} \(\d+ bytes, digest ok, .*\)",
    ),
    Attack(
        "header one byte over the limit",
        header_one_byte_over,
        lambda ctx: (
            rf"error reply BadRequest: header of {ctx.limits.max_header_bytes + 1} bytes "
            rf"exceeds the limit of {ctx.limits.max_header_bytes} bytes"
        ),
    ),
    Attack(
        "silent stream",
        silent_stream,
        lambda ctx: (
            rf"stream reset with code 0 after "
            rf"({round(ctx.limits.header_timeout_s)}|{round(ctx.limits.header_timeout_s) + 1}) s"
        ),
    ),
    Attack(
        "unidirectional stream",
        unidirectional_stream,
        lambda ctx: rf"0 granted; connection closed: STREAM_LIMIT_ERROR{BY_THE_SERVER}",
    ),
    Attack(
        "1,000 streams at once",
        thousand_streams,
        lambda ctx: rf"{ctx.target.streams} streams granted; 1000 of 1000 requests served",
    ),
    Attack(
        "one stream past the stream limit",
        streams_past_the_limit,
        lambda ctx: rf"{ctx.target.streams + 1} streams opened: connection closed: "
        rf"STREAM_LIMIT_ERROR{BY_THE_SERVER}",
    ),
    Attack(
        "200 connections at once",
        two_hundred_connections,
        lambda ctx: (
            rf"200 handshakes, {ctx.target.connections_per_peer} left open, "
            rf"{200 - ctx.target.connections_per_peer} connection closed: application code 2 "
            r"\(too many connections from this peer\); "
            rf"{ctx.target.connections_per_peer} of those left open served"
        ),
    ),
]


async def still_serves(ctx: Context) -> str:
    """The health check: a fresh connection with the right certificate gets a real image."""
    try:
        connection = await connect(ctx.target, ctx.config())
    except (ConnectionError, TimeoutError) as error:
        return f"no connection: {error or type(error).__name__}"
    try:
        return await connection.request(get_image(KNOWN_IMAGE))
    finally:
        await connection.shut()


def make_foreign_ca(folder: Path, ca_common_name: str) -> Credentials:
    """A CA nobody in the cluster trusts, named `ca_common_name`, and a client certificate
    from it that names the client role exactly as the real one does."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_common_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("client.flotilla")]), False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (folder / "cert.pem").write_bytes(cert.public_bytes(pem))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    return Credentials(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
