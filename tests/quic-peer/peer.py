#!/usr/bin/env python3
"""An independent QUIC peer for Flotilla: attacks an edge and the canonical with aioquic.

Written against the protocol, not the Rust code: each attack opens its own connections,
does something a well-behaved peer would not, and returns what it observed as one line
("handshake refused: TLS alert 116 certificate_required", "error reply BadRequest: ...").
The observed line must match the expected one (a regular expression), and after every attack
a fresh connection with the right certificate must still get a real image, byte-checked
against its SHA-256. With --load, an edge is held under 200 connections and 1,000 open
streams while its resident memory is sampled from /proc.

`cargo xtask test` runs this against a cluster of its own on the process runtime; to run it
by hand against a running process cluster:

    target/quic-peer/venv/bin/python tests/quic-peer/peer.py --cluster .cluster \\
        --limits target/quic-peer/limits.json [--load --node-pid PID --memory-limit-mb 256]

Exit codes: 0 every outcome as expected, 1 an outcome differed, 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The sibling modules are imported from the source tree: leave no __pycache__ in it.
sys.dont_write_bytecode = True

from attacks import ATTACKS, CLUSTER_CA_NAME, KNOWN_IMAGE, Context, make_foreign_ca, still_serves
from cluster import Credentials, Limits, Target, UsageError, load_cluster
from memory_load import LOAD_CONNECTIONS, LOAD_STREAMS, load
from wire_format import check_encoding


@dataclass
class Row:
    """One attack on one server: what was expected, what happened, and the health check."""

    target: str
    attack: str
    expected: str
    observed: str
    served_after: str
    passed: bool


async def run_attacks(
    targets: list[Target],
    credentials: Credentials,
    foreign: dict[str, Credentials],
    limits: Limits,
    only: list[str],
) -> list[Row]:
    """Every attack (or those named in `only`) on every target, each followed by a health
    check: a fresh connection with the right certificate must still get a real image."""
    rows = []
    for target in targets:
        ctx = Context(target, credentials, foreign, limits)
        for attack in ATTACKS:
            if only and not any(word.lower() in attack.name.lower() for word in only):
                continue
            expected = attack.expected(ctx)
            started = time.monotonic()
            try:
                observed = await asyncio.wait_for(attack.run(ctx), 120)
            except Exception as error:  # An attack that breaks is a failure to report, not a crash.
                observed = f"the attack itself failed: {type(error).__name__}: {error}"
            served = await still_serves(ctx)
            passed = bool(re.fullmatch(expected, observed)) and served.startswith(
                f"image {KNOWN_IMAGE} ("
            ) and "digest ok" in served
            rows.append(Row(target.label, attack.name, expected, observed, served, passed))
            mark = "ok  " if passed else "FAIL"
            print(
                f"{mark} {target.label:<10} {attack.name:<38} {observed}"
                f"  [{time.monotonic() - started:.1f} s]",
                file=sys.stderr,
                flush=True,
            )
    return rows


def print_table(rows: list[Row]) -> None:
    header = ("target", "attack", "observed", "served after")
    table = [(r.target, r.attack, r.observed, r.served_after.split(" (")[0]) for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *table)]
    widths[2] = min(widths[2], 110)
    for line in [header] + table:
        cells = [str(cell)[: widths[i]].ljust(widths[i]) for i, cell in enumerate(line)]
        print("  ".join(cells).rstrip())
    for row in rows:
        if not row.passed:
            print(f"\nFAILED {row.target} / {row.attack}\n  expected: {row.expected}\n"
                  f"  observed: {row.observed}\n  served after: {row.served_after}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Attack a Flotilla edge and canonical over QUIC with an independent "
        "peer (aioquic) and check that each attack is refused or bounded.",
        epilog="Exit codes: 0 all as expected, 1 an outcome differed, 2 bad usage or input.",
    )
    parser.add_argument("--cluster", type=Path, required=True,
                        help="cluster folder made by `cargo xtask up` (cluster.toml, client/)")
    parser.add_argument("--limits", type=Path, required=True,
                        help="JSON of the wire::limits bounds, written by xtask")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--only", action="append", default=[], metavar="WORD",
                        help="run only attacks whose name contains WORD (repeatable)")
    parser.add_argument("--target", choices=["node", "canonical", "both"], default="both",
                        help="which server the attacks go to [default: both]")
    parser.add_argument("--load", action="store_true",
                        help="also hold 200 connections and 1,000 streams on the edge and "
                        "sample its memory (needs --node-pid and --memory-limit-mb)")
    parser.add_argument("--node-pid", type=int, help="process id of the edge under attack")
    parser.add_argument("--memory-limit-mb", type=int,
                        help="the edge's container memory limit, in MiB")
    parser.add_argument("--work", type=Path, default=Path("target/quic-peer/work"),
                        help="scratch folder for the foreign CA [default: %(default)s]")
    args = parser.parse_args(argv)
    if args.load and (args.node_pid is None or args.memory_limit_mb is None):
        parser.error("--load needs --node-pid and --memory-limit-mb")
    return args


async def main_async(args: argparse.Namespace) -> int:
    check_encoding()
    limits = Limits.load(args.limits)
    cluster_targets, credentials = load_cluster(args.cluster, limits)
    node = cluster_targets[0]
    targets = {
        "node": cluster_targets[:1],
        "canonical": cluster_targets[1:],
        "both": cluster_targets,
    }[args.target]
    foreign = {
        "impostor": make_foreign_ca(args.work / "impostor-ca", CLUSTER_CA_NAME),
        "stranger": make_foreign_ca(args.work / "stranger-ca", "Some other CA"),
    }
    rows = await run_attacks(targets, credentials, foreign, limits, args.only)
    report = None
    if args.load:
        report = await load(node, credentials, limits, args.node_pid, args.memory_limit_mb)
    if args.json:
        print(json.dumps({
            "attacks": [row.__dict__ for row in rows],
            "load": None if report is None else {
                key: value for key, value in report.__dict__.items() if key != "checks"
            } | {"checks": [{"check": name, "passed": ok} for name, ok in report.checks]},
        }, indent=2))
    else:
        print_table(rows)
        if report is not None:
            print(f"\nedge memory under {LOAD_CONNECTIONS} connections and {LOAD_STREAMS} "
                  f"streams: idle {report.idle_mib:.1f} MiB, peak {report.peak_mib:.1f} MiB, "
                  f"after {report.after_mib:.1f} MiB (limit {report.limit_mib} MiB, "
                  f"return bound idle + {report.return_bound_mib:.0f} MiB)")
            for name, ok in report.checks:
                print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    passed = sum(1 for row in rows if row.passed)
    load_said = "not run" if report is None else "as expected" if report.passed else "FAILED"
    print(f"quic peer: {passed} of {len(rows)} attacks as expected; load {load_said}",
          file=sys.stderr)
    return 0 if passed == len(rows) and (report is None or report.passed) else 1


def main() -> int:
    args = parse_args(sys.argv[1:])
    # aioquic logs every refused handshake it sees; the table says it once.
    logging.getLogger("quic").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(main_async(args))
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 1


if __name__ == "__main__":
    sys.exit(main())
