//! The fault layer in a server's own UDP socket: what lets `partition` and `netem` reach a
//! member whose network namespace the operator cannot enter (a task on another machine of a
//! swarm). [`FaultySocket`] wraps the socket quinn's runtime makes; while [`SocketFaults`]
//! holds [`NetFaults`], datagrams from `drop_from` are dropped on receive, datagrams to
//! `drop_to` are dropped instead of sent, and what is sent is delayed (a copy sent later by a
//! timer task) or lost. GSO batches are split into their segments when they are delayed or
//! lost, so each datagram gets its own fate, as behind `tc netem`.
//!
//! With no faults set, each datagram costs one atomic load ([`SocketFaults::current`]); the
//! faults themselves are read under a lock only while some are set.
//!
//! Only an operator certificate may set them ([`answer`]).

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, SendStream, UdpPoller};
use wire::message::ErrorKind;
use wire::{NetFaults, Response, Role};

use crate::server::{reply, reply_error};

/// Most datagrams waiting out a delay at once; past it, more are dropped (as a full netem
/// queue drops). 10 000 datagrams of ~1.4 KB is 14 MB held for the delay at worst.
pub const MAX_DELAYED_DATAGRAMS: usize = 10_000;
/// Tries of a delayed datagram against a socket whose send buffer stays full.
const DELAYED_SEND_TRIES: usize = 8;

/// The faults of one socket, shared by the socket and whoever sets them (the request
/// handler). Cloning shares.
#[derive(Clone, Default)]
pub struct SocketFaults(Arc<Shared>);

#[derive(Default)]
struct Shared {
    /// Whether `faults` holds anything: the only thing the datagram path reads when not.
    active: AtomicBool,
    faults: Mutex<Arc<NetFaults>>,
    /// State of the draws for loss and jitter (splitmix64); quality is not the point.
    draws: AtomicU64,
    /// Datagrams waiting out a delay now.
    delayed: AtomicUsize,
}

impl fmt::Debug for SocketFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SocketFaults({})", self.snapshot())
    }
}

impl SocketFaults {
    /// Replaces the faults (the default clears them).
    pub fn set(&self, faults: NetFaults) {
        let active = !faults.is_none();
        // A poisoned lock only means a panic elsewhere mid-swap of an Arc; the value is whole.
        let mut current = self.0.faults.lock().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(faults);
        self.0.active.store(active, Ordering::Release);
    }

    /// The faults in force now.
    pub fn snapshot(&self) -> NetFaults {
        self.current().map(|f| (*f).clone()).unwrap_or_default()
    }

    /// The faults in force, or `None` (one atomic load) when there are none.
    fn current(&self) -> Option<Arc<NetFaults>> {
        if !self.0.active.load(Ordering::Acquire) {
            return None;
        }
        let faults = self.0.faults.lock().unwrap_or_else(|e| e.into_inner());
        Some(faults.clone())
    }

    /// A draw in `0..bound` (bound > 0).
    fn draw(&self, bound: u64) -> u64 {
        let mut z = self
            .0
            .draws
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound
    }

    fn lost(&self, faults: &NetFaults) -> bool {
        faults.loss_ppm > 0
            && self.draw(u64::from(wire::netfault::ALL_LOST_PPM)) < u64::from(faults.loss_ppm)
    }

    /// One datagram's delay: the delay plus a uniform draw in ±jitter, never below zero.
    fn delay(&self, faults: &NetFaults) -> Duration {
        let offset = match faults.jitter_us {
            0 => 0,
            jitter => self.draw(2 * jitter + 1) as i128 - i128::from(jitter),
        };
        Duration::from_micros((i128::from(faults.delay_us) + offset).max(0) as u64)
    }
}

/// A UDP socket with [`SocketFaults`] in front of it.
#[derive(Debug)]
pub struct FaultySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    faults: SocketFaults,
}

impl FaultySocket {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, faults: SocketFaults) -> FaultySocket {
        FaultySocket { inner, faults }
    }

    /// Sends `datagram` after `delay` from a timer task, unless too many already wait.
    fn send_later(&self, transmit: &Transmit, datagram: &[u8], delay: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to wait on (never under quinn's tokio driver): send it now.
            let _ = self.inner.try_send(&single(transmit, datagram));
            return;
        };
        let shared = self.faults.0.clone();
        if shared.delayed.fetch_add(1, Ordering::AcqRel) >= MAX_DELAYED_DATAGRAMS {
            shared.delayed.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let inner = self.inner.clone();
        let destination = transmit.destination;
        let ecn = transmit.ecn;
        let src_ip = transmit.src_ip;
        let datagram = datagram.to_vec();
        runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            let transmit = Transmit {
                destination,
                ecn,
                contents: &datagram,
                segment_size: None,
                src_ip,
            };
            let mut poller = inner.clone().create_io_poller();
            for _ in 0..DELAYED_SEND_TRIES {
                match inner.try_send(&transmit) {
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        if std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    // Sent, or failed as a datagram may: the peer sees a loss either way.
                    _ => break,
                }
            }
            shared.delayed.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// `datagram`, one segment of `transmit`, as a transmit of its own.
fn single<'a>(transmit: &Transmit<'_>, datagram: &'a [u8]) -> Transmit<'a> {
    Transmit {
        destination: transmit.destination,
        ecn: transmit.ecn,
        contents: datagram,
        segment_size: None,
        src_ip: transmit.src_ip,
    }
}

impl AsyncUdpSocket for FaultySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let Some(faults) = self.faults.current() else {
            return self.inner.try_send(transmit);
        };
        if NetFaults::names(&faults.drop_to, transmit.destination) {
            // Gone, as a cut link loses it: the sender learns nothing.
            return Ok(());
        }
        if faults.delay_us == 0 && faults.jitter_us == 0 && faults.loss_ppm == 0 {
            return self.inner.try_send(transmit);
        }
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for (position, datagram) in transmit.contents.chunks(segment).enumerate() {
            if self.faults.lost(&faults) {
                continue;
            }
            let delay = self.faults.delay(&faults);
            if !delay.is_zero() {
                self.send_later(transmit, datagram, delay);
                continue;
            }
            match self.inner.try_send(&single(transmit, datagram)) {
                // Nothing of this transmit left yet: quinn may try all of it again.
                Err(error) if position == 0 => return Err(error),
                // Later segments of a batch: lost, as a full queue loses them.
                _ => {}
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let count = ready!(self.inner.poll_recv(cx, bufs, meta))?;
            let Some(faults) = self.faults.current() else {
                return Poll::Ready(Ok(count));
            };
            if faults.drop_from.is_empty() {
                return Poll::Ready(Ok(count));
            }
            // Keep the datagrams of allowed sources, moved to the front in order.
            let mut kept = 0;
            for index in 0..count {
                if NetFaults::names(&faults.drop_from, meta[index].addr) {
                    continue;
                }
                if kept != index {
                    let length = meta[index].len;
                    let (front, back) = bufs.split_at_mut(index);
                    front[kept][..length].copy_from_slice(&back[0][..length]);
                    meta[kept] = meta[index];
                }
                kept += 1;
            }
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
            // All dropped: read on until something passes or the socket has nothing more
            // (then the inner socket has registered the waker).
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Answers a [`wire::Request::NetFaults`] from `peer`: applied to `faults` and acknowledged
/// when the peer's certificate is an operator's and the faults are within bounds, refused in
/// one line otherwise. Returns the outcome for the request metrics.
pub async fn answer(
    peer: Role,
    requested: NetFaults,
    faults: &SocketFaults,
    name: &str,
    send: &mut SendStream,
) -> &'static str {
    if peer != Role::Operator {
        tracing::warn!(%peer, "refusing a net_faults request");
        reply_error(
            send,
            ErrorKind::Forbidden,
            format!("net_faults requests are for operator certificates only; {peer} certificates may not send them"),
        )
        .await;
        return "forbidden";
    }
    match requested.checked() {
        Ok(requested) => {
            tracing::info!(faults = %requested, "socket faults set by the operator");
            faults.set(requested);
            reply(send, &Response::Ack).await;
            "ok"
        }
        Err(error) => {
            reply_error(send, ErrorKind::BadRequest, format!("{name}: {error}")).await;
            "error"
        }
    }
}
