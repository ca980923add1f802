//! What the nfnetlink_queue fuzzer checks: the delayer's codec over any datagram the kernel
//! could hand it. Called by `fuzz/fuzz_targets/` and, on every corpus input, by `cargo test`
//! (`crates/testkit/tests/fuzz_corpus.rs`).

use crate::nfqueue::{
    acknowledgement, message, messages, packet_ids, NFNL_SUBSYS_QUEUE, NFQA_VERDICT_HDR,
    NFQNL_MSG_VERDICT, NF_ACCEPT, NLM_F_REQUEST,
};

/// Size of `struct nlmsghdr`.
const NETLINK_HEADER: usize = 16;

/// Valid datagrams: two packet notices, and the kernel's acknowledgement and refusal
/// (EBUSY) of a config request.
pub fn seeds() -> Vec<Vec<u8>> {
    use crate::nfqueue::{NFQA_PACKET_HDR, NFQNL_MSG_PACKET, NLMSG_ERROR};

    // nfqnl_msg_packet_hdr: packet id (big-endian), hardware protocol, hook.
    let notice = |id: u32| {
        let mut header = id.to_be_bytes().to_vec();
        header.extend([0x08, 0x00, 3]);
        message(NFQNL_MSG_PACKET, 0, 0, &[(NFQA_PACKET_HDR, &header)])
    };
    // An error message is a plain nlmsghdr (type 2, not a queue message), then the error
    // code and the request's header.
    let answer = |sequence: u32, code: i32| {
        let mut bytes = vec![0u8; NETLINK_HEADER];
        bytes.extend(code.to_ne_bytes());
        bytes.extend(&message(2, NLM_F_REQUEST, sequence, &[])[..NETLINK_HEADER]);
        let length = bytes.len() as u32;
        bytes[0..4].copy_from_slice(&length.to_ne_bytes());
        bytes[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        bytes[8..12].copy_from_slice(&sequence.to_ne_bytes());
        bytes
    };
    vec![
        [notice(42), notice(43)].concat(),
        answer(1, 0),
        answer(2, -16),
    ]
}

/// `bytes` as one netlink datagram. Its messages lie within it, at most one per header's
/// worth of bytes; the packet ids are those of its packet notices; an acknowledgement is
/// read whatever its error code; and the verdict the delayer sends for each id reads back as
/// a verdict message carrying that id.
pub fn nfqueue_datagram(bytes: &[u8]) {
    let range = bytes.as_ptr_range();
    let mut count = 0;
    for (_, _, payload) in messages(bytes) {
        count += 1;
        let inside = payload.as_ptr_range();
        assert!(range.start <= inside.start && inside.end <= range.end);
        assert!(count <= bytes.len() / NETLINK_HEADER);
    }
    let ids = packet_ids(bytes);
    assert!(ids.len() <= count);
    for (_, sequence, _) in messages(bytes) {
        if let Some(Err(errno)) = acknowledgement(bytes, sequence) {
            assert!(errno != 0, "a refusal without an errno");
        }
    }
    for id in ids {
        let mut header = NF_ACCEPT.to_be_bytes().to_vec();
        header.extend(id.to_be_bytes());
        let verdict = message(
            NFQNL_MSG_VERDICT,
            NLM_F_REQUEST,
            id,
            &[(NFQA_VERDICT_HDR, &header)],
        );
        let parsed: Vec<_> = messages(&verdict).collect();
        assert_eq!(parsed.len(), 1);
        let (kind, sequence, payload) = parsed[0];
        assert_eq!(kind, (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT);
        assert_eq!(sequence, id);
        // nfgenmsg, the attribute's length and type, then the verdict and the id.
        assert_eq!(payload.len(), 4 + 4 + 8);
        assert_eq!(payload[8..12], NF_ACCEPT.to_be_bytes());
        assert_eq!(payload[12..16], id.to_be_bytes());
    }
}
