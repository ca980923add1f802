//! The catalog file: what the canonical recorded about each image the first time it saw it
//! (file name, size, content type, SHA-256), persisted so that a file changed while the
//! canonical was down is still told apart from the one it catalogued. Encoding and decoding
//! are pure; [`save`] writes atomically (temp file, fsync, rename, fsync the folder).
//!
//! The format is plain text, one image a line, closed by a line that counts the records and
//! holds the SHA-256 of everything before it, so a truncated or damaged file is refused as a
//! whole instead of being read as a shorter catalog:
//!
//! ```text
//! flotilla catalog v1
//! 5 123456 <sha-256 hex> image/png 5.png
//! end 1 <sha-256 hex of the lines above>
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use wire::limits::MAX_CATALOG_BYTES;
use wire::{Digest, ImageId};

/// The first line of every catalog file.
const HEADER: &str = "flotilla catalog v1";

/// Name of the catalog file inside the images folder when no other place is given.
pub const DEFAULT_FILE_NAME: &str = ".flotilla-catalog";

/// What the catalog holds about one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The file's name in the images folder, `<id>.<ext>`.
    pub file: String,
    pub size: u64,
    pub content_type: String,
    pub digest: Digest,
}

/// Every catalogued image, by id.
pub type Catalog = BTreeMap<ImageId, Record>;

/// Why a catalog file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading the catalog {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the catalog {path} is damaged ({detail}); the images cannot be checked against it: restore it, or accept the images folder as it is now with `--reindex` (`cargo xtask up N --reindex`)")]
    Damaged { path: String, detail: String },
}

/// The text of `catalog`.
pub fn encode(catalog: &Catalog) -> String {
    let mut text = format!("{HEADER}\n");
    for (id, record) in catalog {
        text.push_str(&format!(
            "{id} {} {} {} {}\n",
            record.size, record.digest, record.content_type, record.file
        ));
    }
    let checksum = Digest::of(text.as_bytes());
    text.push_str(&format!("end {} {checksum}\n", catalog.len()));
    text
}

/// Parses a catalog file's text; `Err` says what is wrong with it.
pub fn decode(text: &str) -> Result<Catalog, String> {
    let body_end = text
        .trim_end_matches('\n')
        .rfind('\n')
        .map(|position| position + 1)
        .ok_or("it has no closing line (truncated?)")?;
    let (body, trailer) = text.split_at(body_end);
    let mut fields = trailer.trim_end_matches('\n').split(' ');
    let (Some("end"), Some(count), Some(checksum), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err("its last line is not the closing `end` line (truncated?)".into());
    };
    if Digest::of(body.as_bytes()).to_hex() != checksum {
        return Err("its checksum does not match its contents".into());
    }
    let mut lines = body.lines();
    if lines.next() != Some(HEADER) {
        return Err(format!("it does not start with `{HEADER}`"));
    }
    let mut catalog = Catalog::new();
    for (number, line) in lines.enumerate() {
        let (id, record) =
            decode_line(line).ok_or_else(|| format!("line {} is malformed", number + 2))?;
        if catalog.insert(id, record).is_some() {
            return Err(format!("image {id} appears twice"));
        }
    }
    // The count is not quoted back: a damaged file's bytes do not belong in a message.
    let count: usize = count
        .parse()
        .map_err(|_| "its closing line does not count its records".to_string())?;
    if count != catalog.len() {
        return Err(format!(
            "it closes with {count} records but holds {}",
            catalog.len()
        ));
    }
    Ok(catalog)
}

fn decode_line(line: &str) -> Option<(ImageId, Record)> {
    let mut fields = line.splitn(5, ' ');
    let id = ImageId(fields.next()?.parse().ok()?);
    let size = fields.next()?.parse().ok()?;
    let digest: [u8; 32] = hex::decode(fields.next()?).ok()?.try_into().ok()?;
    let content_type = fields.next()?.to_string();
    let file = fields.next()?.to_string();
    Some((
        id,
        Record {
            file,
            size,
            content_type,
            digest: Digest(digest),
        },
    ))
}

/// Loads the catalog at `path`; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<Catalog>, CatalogError> {
    let io_error = |source| CatalogError::Io {
        path: path.display().to_string(),
        source,
    };
    let damaged = |detail: String| CatalogError::Damaged {
        path: path.display().to_string(),
        detail,
    };
    let length = match std::fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(error)),
    };
    if length > MAX_CATALOG_BYTES {
        return Err(damaged(format!(
            "{length} bytes, over the {MAX_CATALOG_BYTES} byte limit"
        )));
    }
    let bytes = std::fs::read(path).map_err(io_error)?;
    let text = String::from_utf8(bytes).map_err(|_| damaged("it is not UTF-8 text".into()))?;
    decode(&text).map(Some).map_err(damaged)
}

/// Writes `catalog` to `path` atomically, creating its folder.
pub fn save(path: &Path, catalog: &Catalog) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    crate::store::write_file_atomic(path, encode(catalog).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Catalog {
        let mut catalog = Catalog::new();
        catalog.insert(
            ImageId(5),
            Record {
                file: "5.png".into(),
                size: 3,
                content_type: "image/png".into(),
                digest: Digest::of(b"abc"),
            },
        );
        catalog.insert(
            ImageId(12),
            Record {
                file: "12.my image.jpg".into(),
                size: 0,
                content_type: "image/jpeg".into(),
                digest: Digest::of(b""),
            },
        );
        catalog
    }

    #[test]
    fn a_catalog_round_trips() {
        let catalog = sample();
        assert_eq!(decode(&encode(&catalog)).unwrap(), catalog);
        assert_eq!(decode(&encode(&Catalog::new())).unwrap(), Catalog::new());
    }

    #[test]
    fn a_truncated_or_changed_catalog_is_refused_with_a_reason() {
        let text = encode(&sample());
        for cut in [0, 10, text.len() / 2, text.len() - 10] {
            let error = decode(&text[..cut]).unwrap_err();
            assert!(!error.is_empty(), "cut at {cut}");
        }
        let garbled = format!("{HEADER}\n");
        let garbled = format!("{garbled}end 0\x1b[2J {}\n", Digest::of(garbled.as_bytes()));
        assert_eq!(
            decode(&garbled).unwrap_err(),
            "its closing line does not count its records"
        );
        let changed = text.replacen("5 3 ", "5 4 ", 1);
        assert_eq!(
            decode(&changed).unwrap_err(),
            "its checksum does not match its contents"
        );
    }

    #[test]
    fn a_damaged_catalog_file_names_itself_and_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog");
        assert!(load(&path).unwrap().is_none());
        save(&path, &sample()).unwrap();
        assert_eq!(load(&path).unwrap().unwrap(), sample());
        let text = std::fs::read(&path).unwrap();
        std::fs::write(&path, &text[..text.len() - 20]).unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("damaged"), "{error}");
        assert!(error.contains("--reindex"), "{error}");
    }
}
