//! What the catalog fuzzer checks: the canonical's catalog parser over any file text. Called
//! by `fuzz/fuzz_targets/` and, on every corpus input, by `cargo test`
//! (`crates/testkit/tests/fuzz_corpus.rs`).

use wire::limits::MAX_REFUSAL_CHARS;
use wire::Digest;

use crate::catalog;

/// `bytes` as a catalog file, and its lines again closed by a matching `end` line (so the
/// fuzzer gets past the checksum into the records). A catalog that parses writes out as text
/// that parses to the same catalog; a refusal is one printable line of bounded length.
pub fn catalog(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    check(text);
    check(&closed(text));
}

/// `text` as the body of a catalog: its lines, then the `end` line that counts them (all but
/// the first) and holds their checksum.
fn closed(text: &str) -> String {
    let mut body = text.to_string();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let records = body.lines().count().saturating_sub(1);
    let checksum = Digest::of(body.as_bytes());
    body.push_str(&format!("end {records} {checksum}\n"));
    body
}

/// Valid inputs for [`catalog`]: a catalog file as the canonical writes it, an empty one, and
/// the lines of one without their closing line.
pub fn seeds() -> Vec<Vec<u8>> {
    use wire::ImageId;

    let mut images = catalog::Catalog::new();
    for (id, file, content_type) in [
        (5, "5.png", "image/png"),
        (12, "12.my image.jpg", "image/jpeg"),
        (
            u64::MAX,
            "18446744073709551615.bin",
            "application/octet-stream",
        ),
    ] {
        images.insert(
            ImageId(id),
            catalog::Record {
                file: file.into(),
                size: id % 1000,
                content_type: content_type.into(),
                digest: Digest::of(file.as_bytes()),
            },
        );
    }
    let whole = catalog::encode(&images);
    let lines = whole[..whole.trim_end().rfind('\n').map_or(0, |end| end + 1)].to_string();
    vec![
        whole.into_bytes(),
        catalog::encode(&catalog::Catalog::new()).into_bytes(),
        lines.into_bytes(),
    ]
}

fn check(text: &str) {
    match catalog::decode(text) {
        Ok(parsed) => {
            let written = catalog::encode(&parsed);
            assert_eq!(catalog::decode(&written), Ok(parsed));
        }
        Err(reason) => {
            assert!(!reason.is_empty());
            assert!(reason.chars().count() <= MAX_REFUSAL_CHARS, "{reason:?}");
            assert!(!reason.chars().any(char::is_control), "{reason:?}");
        }
    }
}
