"""What the peer attacks and with what: the cluster folder (`cluster.toml`, the client's
credentials), the bounds of `wire::limits` as xtask wrote them, and aioquic configurations."""

from __future__ import annotations

import json
import ssl
import tomllib
from dataclasses import dataclass
from pathlib import Path

from aioquic.quic.configuration import QuicConfiguration
from aioquic.tls import SessionTicket


ALPN = "flotilla/1"


class UsageError(Exception):
    """Bad input from the command line or the cluster folder: exit code 2."""


@dataclass(frozen=True)
class Limits:
    """The bounds of `wire::limits` this peer tests, written by xtask from the Rust constants."""

    max_header_bytes: int
    edge_streams: int
    origin_streams: int
    edge_connections_per_peer: int
    origin_connections_per_peer: int
    header_timeout_s: float
    reply_send_deadline_s: float
    reset_stalled: int

    @staticmethod
    def load(path: Path) -> Limits:
        try:
            values = json.loads(path.read_text())
            return Limits(**{name: values[name] for name in Limits.__dataclass_fields__})
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UsageError(f"reading the limits file {path}: {error}") from error


@dataclass(frozen=True)
class Target:
    """One server under attack: an edge or the canonical."""

    label: str
    host: str
    port: int
    server_name: str
    streams: int
    connections_per_peer: int


@dataclass
class Credentials:
    """PEM files of a client identity: the cluster's, or one from a foreign CA."""

    ca: Path
    cert: Path | None
    key: Path | None


def load_cluster(folder: Path, limits: Limits) -> tuple[list[Target], Credentials]:
    """Node 1 and the canonical from `cluster.toml`, and the client's credentials."""
    try:
        cluster = tomllib.loads((folder / "cluster.toml").read_text())
        canonical = cluster["canonical"]
        node = cluster["nodes"][0]
    except (OSError, tomllib.TOMLDecodeError, KeyError, IndexError) as error:
        raise UsageError(
            f"{folder}/cluster.toml does not describe a cluster ({error}); start one with "
            "`cargo xtask up 1 --runtime process`"
        ) from error

    def target(member: dict, label: str, name: str, streams: int, per_peer: int) -> Target:
        host, _, port = member["quic"].rpartition(":")
        return Target(label, host, int(port), name, streams, per_peer)

    client = folder / "client"
    credentials = Credentials(client / "ca.pem", client / "cert.pem", client / "key.pem")
    for path in (credentials.ca, credentials.cert, credentials.key):
        if not path.is_file():
            raise UsageError(f"{path} is missing; is {folder} a cluster folder made by `up`?")
    return [
        target(
            node,
            f"node {node['index']}",
            f"node-{node['index']}.flotilla",
            limits.edge_streams,
            limits.edge_connections_per_peer,
        ),
        target(
            canonical,
            "canonical",
            "canonical.flotilla",
            limits.origin_streams,
            limits.origin_connections_per_peer,
        ),
    ], credentials


def configuration(
    target: Target,
    credentials: Credentials,
    alpn: list[str] | None = (ALPN,),
    ticket: SessionTicket | None = None,
    max_stream_data: int | None = None,
) -> QuicConfiguration:
    """A client configuration that verifies the server against the cluster CA."""
    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=list(alpn) if alpn else None,
        server_name=target.server_name,
        verify_mode=ssl.CERT_REQUIRED,
        idle_timeout=30.0,
    )
    config.load_verify_locations(cafile=str(credentials.ca))
    if credentials.cert is not None and credentials.key is not None:
        config.load_cert_chain(str(credentials.cert), str(credentials.key))
    if ticket is not None:
        config.session_ticket = ticket
    if max_stream_data is not None:
        config.max_stream_data = max_stream_data
    return config
