//! One row of `client status --json` and `client ping --json`: the client writes it, xtask
//! (`up`'s readiness wait, `top`) and the end-to-end tests read it. One type, so a field added
//! on one side is seen on the other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One member as the client saw it. The canonical is index 0. Fields a member did not report
/// (it was unreachable, or `ping` does not ask for them) are `None` (JSON `null`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusRow {
    pub index: u16,
    pub name: String,
    pub reachable: bool,
    /// `leader`, `follower`, `candidate`, or `canonical`.
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub term: Option<u64>,
    /// The leader this member follows, by index.
    #[serde(default)]
    pub leader: Option<u16>,
    #[serde(default)]
    pub cache_items: Option<u64>,
    #[serde(default)]
    pub cache_bytes: Option<u64>,
    #[serde(default)]
    pub cache_hits: Option<u64>,
    #[serde(default)]
    pub cache_misses: Option<u64>,
    /// Round trip from the client, in milliseconds.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// Round trip from this member to each peer it measures, in milliseconds, keyed by the
    /// peer's index (as a string: JSON keys are strings).
    #[serde(default)]
    pub peer_rtt_ms: Option<BTreeMap<String, f64>>,
    /// Why the member could not be reached or asked.
    #[serde(default)]
    pub error: Option<String>,
}

/// Parses what `client status --json` or `client ping --json` printed: a JSON array of rows.
/// Every reader of that output (xtask's readiness wait and `top`, the end-to-end suite) goes
/// through this one function, which `fuzz/` fuzzes.
pub fn rows_from_json(bytes: &[u8]) -> Result<Vec<StatusRow>, serde_json::Error> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_row_without_status_fields_still_parses() {
        let row: StatusRow =
            serde_json::from_str(r#"{"index":2,"name":"f_node_2","reachable":false}"#).unwrap();
        assert_eq!(row.index, 2);
        assert!(!row.reachable);
        assert_eq!(row.term, None);
    }
}
