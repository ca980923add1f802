//! Newtypes for the identifiers that cross the wire.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// 1-based index of an edge node in the cluster (`{prefix}_node_{index}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeIndex(pub u16);

impl fmt::Display for NodeIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for NodeIndex {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().parse::<u16>() {
            Ok(0) => Err("node indices start at 1".to_string()),
            Ok(index) => Ok(NodeIndex(index)),
            Err(_) => Err(format!("`{text}` is not a node index (expected 1, 2, ...)")),
        }
    }
}

/// Numeric id of a canonical image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ImageId(pub u64);

impl ImageId {
    /// The id of an image file named `<id>.<ext>` (a decimal id, one dot, a non-empty
    /// extension), the one naming rule of an images folder; `None` for any other name.
    pub fn from_file_name(name: &str) -> Option<ImageId> {
        let (stem, extension) = name.split_once('.')?;
        if extension.is_empty() || extension.contains('.') {
            return None;
        }
        if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        stem.parse().ok().map(ImageId)
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ImageId {
    type Err = String;

    /// The error says what was wrong with the text and what an id looks like.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let digits = trimmed.strip_prefix('+').unwrap_or(trimmed);
        trimmed.parse::<u64>().map(ImageId).map_err(|error| {
            let whole = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
            let negative = trimmed
                .strip_prefix('-')
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()));
            if negative {
                format!(
                    "`{text}` is not an image id: ids are never negative (0 to {})",
                    u64::MAX
                )
            } else if whole || *error.kind() == std::num::IntErrorKind::PosOverflow {
                format!(
                    "`{text}` is not an image id: the largest id is {}",
                    u64::MAX
                )
            } else {
                format!("`{text}` is not an image id (expected a number such as 123)")
            }
        })
    }
}

/// Election term: grows monotonically; every election message and heartbeat carries one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Term(pub u64);

impl Term {
    /// The term after this one; `u64::MAX` stays itself rather than overflow (the election never
    /// takes a term anywhere near it, see `election::TERM_CEILING`).
    pub fn next(self) -> Term {
        Term(self.0.saturating_add(1))
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// SHA-256 digest of an image body.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest(#[serde(with = "serde_bytes")] pub [u8; 32]);

impl Digest {
    /// Digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(sha2::Sha256::digest(bytes).into())
    }

    /// A digest computed piece by piece, for a body that is never held whole.
    pub fn incremental() -> DigestBuilder {
        use sha2::Digest as _;
        DigestBuilder(sha2::Sha256::new())
    }

    /// Lower-case hex, as printed in catalogs and logs.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// [`Digest::incremental`]: feed the body in order, then [`DigestBuilder::finish`].
pub struct DigestBuilder(sha2::Sha256);

impl DigestBuilder {
    pub fn update(&mut self, bytes: &[u8]) {
        use sha2::Digest as _;
        self.0.update(bytes);
    }

    pub fn finish(self) -> Digest {
        use sha2::Digest as _;
        Digest(self.0.finalize().into())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
