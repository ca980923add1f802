"""Flotilla's frames, written from the protocol: a big-endian u32 length, a CBOR header
(serde's externally tagged enums: a unit variant is its name as a text string, a struct
variant a one-entry map from its name to a map of its fields), then for images the raw body.
`crates/wire/src/frame.rs` pins these bytes in a test."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cbor2


def frame(header: object) -> bytes:
    encoded = cbor2.dumps(header)
    return len(encoded).to_bytes(4, "big") + encoded


def get_image(image_id: int) -> bytes:
    return frame({"GetImage": {"id": image_id}})


def image_size(image_id: int) -> bytes:
    return frame({"ImageSize": {"id": image_id}})


def check_encoding() -> None:
    """Fails at once if cbor2 no longer encodes a request as the Rust side does."""
    pinned = "00000010a168476574496d616765a1626964187b"
    if get_image(123).hex() != pinned or frame("Ping").hex() != "000000056450696e67":
        raise RuntimeError("cbor2 encodes requests differently from crates/wire; see frame.rs")


@dataclass
class Reply:
    """A parsed reply: its header and whatever body bytes followed it."""

    header: object
    body: bytes

    def describe(self) -> str:
        header = self.header
        if isinstance(header, dict) and "Error" in header:
            error = header["Error"]
            return f"error reply {error['kind']}: {error['message']}"
        if isinstance(header, dict) and "Image" in header:
            meta = header["Image"]["meta"]["meta"]
            body_ok = len(self.body) == meta["size"]
            digest_ok = hashlib.sha256(self.body).digest() == bytes(meta["digest"])
            verdict = "digest ok" if body_ok and digest_ok else "BODY DOES NOT MATCH"
            return (
                f"image {meta['id']} ({meta['size']} bytes, {verdict}, "
                f"{header['Image']['outcome']} by {header['Image']['served_by']})"
            )
        if isinstance(header, dict) and "Size" in header:
            return f"size {header['Size']['id']}: {header['Size']['size']} bytes"
        if isinstance(header, dict):
            return f"reply {next(iter(header), '?')}"
        return f"reply {header}"


def parse_reply(data: bytes) -> Reply | None:
    if len(data) < 4:
        return None
    length = int.from_bytes(data[:4], "big")
    if len(data) < 4 + length:
        return None
    try:
        header = cbor2.loads(data[4 : 4 + length])
    except cbor2.CBORDecodeError as error:
        return Reply({"Undecodable": str(error)}, b"")
    return Reply(header, data[4 + length :])
