//! Faults from the host side: partitions (nftables) and delay or loss (`tc netem`, or the
//! NFQUEUE delayer where the kernel has no netem qdisc), made in a member's own network
//! namespace through `nsenter`, so members never need NET_ADMIN. Two small binaries run in
//! such a namespace: `flotilla-delayer` and `flotilla-udp-probe`.
//!
//! This crate knows nothing of Docker or of the cluster state: a runtime hands it a
//! [`FaultTarget`] (a member's name, host pid and address) and records what it returns.

pub mod fuzzing;
pub mod netem;
pub mod nfqueue;
pub mod partition;
pub mod presets;
pub mod probe;
pub mod shape;
pub mod tools;

/// A member whose network namespace a fault is made in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultTarget {
    /// 0 for the canonical, else the node index.
    pub index: u16,
    /// The member's name, for messages and log files.
    pub name: String,
    /// A host pid inside the member's network namespace (a container's PID 1).
    pub pid: u32,
    /// The member's address on the cluster network, which its peers see as the source.
    pub ip: Option<String>,
}
