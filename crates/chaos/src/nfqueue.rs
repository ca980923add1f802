//! The userspace delayer (`flotilla-delayer`) behind `cargo xtask netem` on kernels built without the netem qdisc
//! (`CONFIG_NET_SCH_NETEM` off, as on some VM kernels). It runs on the host inside one
//! container's network namespace (started through `nsenter --net`, so the node needs no
//! capability), receives the packets that an iptables `NFQUEUE` rule diverts from the
//! container's eth0 egress, and hands each back to the kernel after the delay (verdict
//! ACCEPT), or drops it with the loss probability: netem's job, one level up.
//!
//! It speaks nfnetlink_queue directly over a raw netlink socket (metadata only, no packet
//! copies), and exits when the container's PID 1 goes away, so a killed or restarted node
//! never leaves a worker holding its old namespace.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};

use crate::shape::Shape;

/// The NFQUEUE number the worker binds; queue numbers are per network namespace, so every
/// node's worker can use the same one.
pub const QUEUE: u16 = 7000;
/// The line the worker prints on stdout once it has bound the queue; `netem` waits for it.
pub const READY: &str = "delayer ready";
/// Most packets the kernel holds for the worker before it drops new ones (the default, 1024,
/// is a few megabytes: less than one image in flight under a large delay).
const QUEUE_MAX_PACKETS: u32 = 65_536;
/// Receive buffer asked for, so bursts of packet notices are not lost before they are read.
const RECEIVE_BUFFER_BYTES: usize = 8 << 20;
/// Largest netlink datagram the worker reads (notices carry metadata only: ~100 bytes each).
const DATAGRAM_BYTES: usize = 64 << 10;
/// Most verdicts sent in one netlink datagram.
const VERDICTS_PER_SEND: usize = 256;
/// How often the worker checks that the container still runs.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

// Netlink and nfnetlink_queue constants (linux/netlink.h, linux/netfilter/nfnetlink_queue.h).
const AF_NETLINK: i32 = 16;
const NETLINK_NETFILTER: i32 = 12;
const AF_INET: u16 = 2;
pub(crate) const NFNL_SUBSYS_QUEUE: u16 = 3;
pub(crate) const NFQNL_MSG_PACKET: u16 = 0;
pub(crate) const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
pub(crate) const NFQA_PACKET_HDR: u16 = 1;
pub(crate) const NFQA_VERDICT_HDR: u16 = 2;
const NF_DROP: u32 = 0;
pub(crate) const NF_ACCEPT: u32 = 1;
/// Size of `struct nlmsghdr` plus `struct nfgenmsg`.
const HEADERS: usize = 16 + 4;
/// errno values the worker explains.
const EBUSY: i32 = 16;
const ENOBUFS: i32 = 105;
const ETIMEDOUT: i32 = 110;

/// Runs the delayer until the process `container_pid` (the container's PID 1) is gone;
/// calls `bound` once the queue is bound (the binary prints [`READY`] then).
pub fn run(shape: Shape, container_pid: u32, bound: impl FnOnce()) -> anyhow::Result<()> {
    let watched = ProcessIdentity::of(container_pid)
        .with_context(|| format!("process {container_pid} (the container's PID 1) is gone"))?;
    let mut queue = Queue::bind()?;
    bound();
    eprintln!(
        "bound NFQUEUE {QUEUE} in the network namespace of pid {container_pid}: {}",
        shape.describe()
    );
    let mut random = Random::seeded();
    let mut due: BinaryHeap<Reverse<(Instant, u64, u32)>> = BinaryHeap::new();
    let mut arrivals: u64 = 0;
    let (mut passed, mut dropped, mut overflows) = (0u64, 0u64, 0u64);
    let mut next_watch = Instant::now() + WATCH_INTERVAL;
    let mut buffer = vec![0u8; DATAGRAM_BYTES];
    loop {
        let now = Instant::now();
        let mut verdicts = Vec::new();
        while let Some(Reverse((at, _, id))) = due.peek().copied() {
            if at > now {
                break;
            }
            due.pop();
            verdicts.push((id, NF_ACCEPT));
        }
        passed += verdicts.len() as u64;
        queue.verdicts(&verdicts)?;
        if now >= next_watch {
            if !watched.is_alive() {
                eprintln!(
                    "the container's PID 1 ({container_pid}) is gone; exiting after {passed} packets passed, {dropped} dropped, {overflows} notice overflows"
                );
                return Ok(());
            }
            next_watch = now + WATCH_INTERVAL;
        }
        let until_due = due
            .peek()
            .map(|Reverse((at, _, _))| at.saturating_duration_since(now));
        let wait = until_due
            .unwrap_or(WATCH_INTERVAL)
            .min(next_watch.saturating_duration_since(now))
            // A zero read timeout means "block forever".
            .max(Duration::from_micros(50));
        let packets = match queue.receive(&mut buffer, wait) {
            Ok(packets) => packets,
            Err(Received::Overflow) => {
                // The kernel dropped notices (and so their packets): a congested link.
                overflows += 1;
                continue;
            }
            Err(Received::Failed(error)) => return Err(error),
        };
        let arrived = Instant::now();
        let mut drops = Vec::new();
        for id in packets {
            arrivals += 1;
            if random.below(1_000_000) < u64::from(shape.loss_ppm) {
                drops.push((id, NF_DROP));
                continue;
            }
            let delay = shape.packet_delay(|bound| random.below(bound));
            due.push(Reverse((arrived + delay, arrivals, id)));
        }
        dropped += drops.len() as u64;
        queue.verdicts(&drops)?;
    }
}

/// Why a receive gave no packets.
enum Received {
    /// The socket's buffer overflowed (ENOBUFS): some notices were lost.
    Overflow,
    Failed(anyhow::Error),
}

/// A bound nfnetlink_queue socket.
struct Queue {
    socket: Socket,
    sequence: u32,
}

impl Queue {
    /// Opens the socket, binds [`QUEUE`] and asks for metadata-only notices.
    fn bind() -> anyhow::Result<Queue> {
        let socket = Socket::new(
            Domain::from(AF_NETLINK),
            Type::RAW,
            Some(Protocol::from(NETLINK_NETFILTER)),
        )
        .context("opening a netfilter netlink socket (needs root)")?;
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER_BYTES);
        let mut queue = Queue {
            socket,
            sequence: 0,
        };
        let mut command = vec![NFQNL_CFG_CMD_BIND, 0];
        command.extend(AF_INET.to_be_bytes());
        queue
            .configure(NFQA_CFG_CMD, &command)
            .map_err(|errno| match errno {
                EBUSY => anyhow::anyhow!(
                    "NFQUEUE {QUEUE} is already bound in this namespace (another netem worker?)"
                ),
                errno => anyhow::anyhow!("binding NFQUEUE {QUEUE} failed (errno {errno})"),
            })?;
        let mut params = 0u32.to_be_bytes().to_vec();
        params.push(NFQNL_COPY_META);
        queue
            .configure(NFQA_CFG_PARAMS, &params)
            .map_err(|errno| anyhow::anyhow!("setting NFQUEUE copy mode failed (errno {errno})"))?;
        queue
            .configure(NFQA_CFG_QUEUE_MAXLEN, &QUEUE_MAX_PACKETS.to_be_bytes())
            .map_err(|errno| anyhow::anyhow!("setting NFQUEUE length failed (errno {errno})"))?;
        Ok(queue)
    }

    /// Sends one config attribute and waits for the kernel's acknowledgement; the error is a
    /// positive errno.
    fn configure(&mut self, attribute: u16, payload: &[u8]) -> Result<(), i32> {
        self.sequence += 1;
        let sequence = self.sequence;
        let message = message(
            NFQNL_MSG_CONFIG,
            NLM_F_REQUEST | NLM_F_ACK,
            sequence,
            &[(attribute, payload)],
        );
        self.socket.send(&message).map_err(errno)?;
        let mut buffer = vec![0u8; DATAGRAM_BYTES];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            self.socket
                .set_read_timeout(Some(Duration::from_millis(200)))
                .map_err(errno)?;
            let read = match (&self.socket).read(&mut buffer) {
                Ok(read) => read,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(e) => return Err(errno(e)),
            };
            if let Some(answer) = acknowledgement(&buffer[..read], sequence) {
                return answer;
            }
        }
        Err(ETIMEDOUT)
    }

    /// Waits up to `wait` for packet notices; returns their packet ids.
    fn receive(&mut self, buffer: &mut [u8], wait: Duration) -> Result<Vec<u32>, Received> {
        self.socket
            .set_read_timeout(Some(wait))
            .map_err(|e| Received::Failed(e.into()))?;
        let read = match (&self.socket).read(buffer) {
            Ok(read) => read,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(Vec::new())
            }
            Err(e) if e.raw_os_error() == Some(ENOBUFS) => return Err(Received::Overflow),
            Err(e) => {
                return Err(Received::Failed(
                    anyhow::Error::from(e).context("reading NFQUEUE notices"),
                ))
            }
        };
        Ok(packet_ids(&buffer[..read]))
    }

    /// Sends `(packet id, verdict)` pairs, many per datagram.
    fn verdicts(&mut self, verdicts: &[(u32, u32)]) -> anyhow::Result<()> {
        for chunk in verdicts.chunks(VERDICTS_PER_SEND) {
            let mut datagram = Vec::with_capacity(chunk.len() * 32);
            for (id, verdict) in chunk {
                let mut header = verdict.to_be_bytes().to_vec();
                header.extend(id.to_be_bytes());
                self.sequence = self.sequence.wrapping_add(1);
                datagram.extend(message(
                    NFQNL_MSG_VERDICT,
                    NLM_F_REQUEST,
                    self.sequence,
                    &[(NFQA_VERDICT_HDR, &header)],
                ));
            }
            self.socket
                .send(&datagram)
                .context("sending NFQUEUE verdicts")?;
        }
        Ok(())
    }
}

/// The ids of the packets noticed in one datagram from the kernel.
pub(crate) fn packet_ids(datagram: &[u8]) -> Vec<u32> {
    let packet_kind = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET;
    messages(datagram)
        .filter(|(kind, _, _)| *kind == packet_kind)
        .filter_map(|(_, _, payload)| packet_id(payload))
        .collect()
}

/// The kernel's answer to request `sequence` in one datagram, if it holds one: `Ok` or the
/// positive errno.
pub(crate) fn acknowledgement(datagram: &[u8], sequence: u32) -> Option<Result<(), i32>> {
    let (_, _, payload) =
        messages(datagram).find(|(kind, seq, _)| *kind == NLMSG_ERROR && *seq == sequence)?;
    let code = payload
        .get(..4)
        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    // The kernel sends a negative errno; `i32::MIN` has no positive counterpart, and
    // negating it overflowed (a panic in a debug build) before it was saturated here.
    Some(if code == 0 {
        Ok(())
    } else {
        Err(code.saturating_neg())
    })
}

fn errno(error: std::io::Error) -> i32 {
    error.raw_os_error().unwrap_or(0)
}

/// One nfnetlink_queue message for [`QUEUE`]: nlmsghdr, nfgenmsg, then the attributes.
pub(crate) fn message(
    kind: u16,
    flags: u16,
    sequence: u32,
    attributes: &[(u16, &[u8])],
) -> Vec<u8> {
    let mut buffer = vec![0u8; 16];
    // nfgenmsg: family unspecified, version 0, the queue number (big-endian).
    buffer.extend([0, 0]);
    buffer.extend(QUEUE.to_be_bytes());
    for (attribute, payload) in attributes {
        let length = 4 + payload.len();
        buffer.extend((length as u16).to_ne_bytes());
        buffer.extend(attribute.to_ne_bytes());
        buffer.extend(*payload);
        buffer.resize(align(buffer.len()), 0);
    }
    let total = buffer.len() as u32;
    buffer[0..4].copy_from_slice(&total.to_ne_bytes());
    buffer[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
    buffer[6..8].copy_from_slice(&flags.to_ne_bytes());
    buffer[8..12].copy_from_slice(&sequence.to_ne_bytes());
    // nlmsg_pid 0: addressed to the kernel.
    buffer
}

/// Netlink's 4-byte alignment.
fn align(length: usize) -> usize {
    (length + 3) & !3
}

/// The messages in one netlink datagram: (type, sequence, payload after nlmsghdr).
pub(crate) fn messages(datagram: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        if rest.len() < 16 {
            return None;
        }
        let length = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if length < 16 || length > rest.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let sequence = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let payload = &rest[16..length];
        rest = &rest[align(length).min(rest.len())..];
        Some((kind, sequence, payload))
    })
}

/// The packet id in a packet notice's payload (nfgenmsg, then attributes).
pub(crate) fn packet_id(payload: &[u8]) -> Option<u32> {
    let mut rest = payload.get(HEADERS - 16..)?;
    while rest.len() >= 4 {
        let length = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        // The top two bits are flags (nested, network byte order).
        let attribute = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if length < 4 || length > rest.len() {
            return None;
        }
        if attribute == NFQA_PACKET_HDR && length >= 8 {
            return Some(u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]));
        }
        rest = &rest[align(length).min(rest.len())..];
    }
    None
}

/// A process told apart from a later one that reuses its pid (by its start time).
struct ProcessIdentity {
    pid: u32,
    started: String,
}

impl ProcessIdentity {
    fn of(pid: u32) -> Option<ProcessIdentity> {
        Some(ProcessIdentity {
            pid,
            started: start_time(pid)?,
        })
    }

    fn is_alive(&self) -> bool {
        start_time(self.pid).is_some_and(|started| started == self.started)
    }
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot).
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name start at field 3.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19).map(str::to_string)
}

/// xorshift64*: plenty for loss and jitter draws, and no dependency.
pub struct Random(u64);

impl Random {
    fn seeded() -> Random {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Random((nanos ^ u64::from(std::process::id()) << 32) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A draw in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_error_code_is_read_without_overflow() {
        let answer = |code: i32| {
            // nlmsghdr (length, type, flags, sequence, pid), then the error code.
            let mut datagram = 20u32.to_ne_bytes().to_vec();
            datagram.extend(NLMSG_ERROR.to_ne_bytes());
            datagram.extend([0, 0]);
            datagram.extend(5u32.to_ne_bytes());
            datagram.extend([0; 4]);
            datagram.extend(code.to_ne_bytes());
            acknowledgement(&datagram, 5)
        };
        assert_eq!(answer(0), Some(Ok(())));
        assert_eq!(answer(-EBUSY), Some(Err(EBUSY)));
        assert_eq!(answer(i32::MIN), Some(Err(i32::MAX)));
    }

    #[test]
    fn messages_round_trip_and_packet_ids_are_found() {
        let header = [0u8, 0, 0, 42, 0x08, 0x00, 3];
        let notice = message(NFQNL_MSG_PACKET, 0, 9, &[(NFQA_PACKET_HDR, &header)]);
        assert_eq!(notice.len() % 4, 0);
        let mut datagram = notice.clone();
        datagram.extend(&notice);
        let parsed: Vec<_> = messages(&datagram).collect();
        assert_eq!(parsed.len(), 2);
        let (kind, sequence, payload) = parsed[0];
        assert_eq!(kind, (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET);
        assert_eq!(sequence, 9);
        assert_eq!(packet_id(payload), Some(42));
        assert_eq!(packet_id(&payload[..4]), None);
        assert_eq!(messages(&datagram[..10]).count(), 0);
    }

    #[test]
    fn this_process_is_alive() {
        let me = ProcessIdentity::of(std::process::id()).unwrap();
        assert!(me.is_alive());
    }
}
