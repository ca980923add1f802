//! The images folder as the canonical finds it: which files are images (`<id>.<ext>`, at most
//! [`MAX_IMAGE_BYTES`]), which are skipped and why, and the one-line [`Notice`]s that start-up
//! and `--reindex` report about them.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::Digest as _;
use wire::limits::MAX_IMAGE_BYTES;
use wire::message::content_type_for;
use wire::{Digest, ImageId};

use crate::catalog::Record;
use crate::store::StoreError;

/// Bytes hashed per read when a whole file is checked.
const HASH_CHUNK_BYTES: usize = 256 * 1024;

/// An image file found in the folder (not read yet).
#[derive(Clone, Debug)]
pub struct Found {
    pub id: ImageId,
    /// Its name, `<id>.<ext>`.
    pub file: String,
    pub path: PathBuf,
    pub size: u64,
}

impl Found {
    /// Reads and hashes the file into a catalog record.
    pub fn record(&self) -> Result<Record, StoreError> {
        let mut file = std::fs::File::open(&self.path).map_err(io_error(&self.path))?;
        let (size, digest) = hash(&mut file).map_err(io_error(&self.path))?;
        Ok(record_for(&self.file, size, digest))
    }
}

/// The record of file `name` holding `size` bytes with `digest`.
pub fn record_for(name: &str, size: u64, digest: Digest) -> Record {
    let extension = name.rsplit_once('.').map_or("", |(_, extension)| extension);
    Record {
        file: name.to_string(),
        size,
        content_type: content_type_for(extension).to_string(),
        digest,
    }
}

/// Why a file in the folder is not an image.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skip {
    NotNamed,
    TooLarge(u64),
    NotAFile,
}

/// What the folder holds.
#[derive(Debug, Default)]
pub struct Listing {
    pub images: BTreeMap<ImageId, Found>,
    /// Files that are not images: name and reason.
    pub skipped: Vec<(String, Skip)>,
}

/// One line about the images folder or the catalog, said at start-up or by `--reindex`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A file that is not served.
    Skipped { file: String, reason: Skip },
    /// A file seen for the first time, catalogued as it is.
    Added {
        id: ImageId,
        file: String,
        size: u64,
    },
    /// A file that no longer matches its record (found at start-up): refused.
    Differs {
        id: ImageId,
        file: String,
        detail: String,
    },
    /// A catalogued file that is gone: refused.
    Missing { id: ImageId, file: String },
    /// `--reindex`: a file whose new contents were accepted.
    Changed {
        id: ImageId,
        file: String,
        detail: String,
    },
    /// `--reindex`: a record whose file is gone, forgotten.
    Removed { id: ImageId, file: String },
    /// `--reindex`: the old catalog could not be read, so nothing could be compared.
    Replaced { detail: String },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Skipped { file, reason } => match reason {
                Skip::NotNamed => write!(f, "skipped {file}: not named `<id>.<ext>`"),
                Skip::TooLarge(size) => write!(
                    f,
                    "skipped {file}: {size} bytes is over the {MAX_IMAGE_BYTES} byte limit of an image"
                ),
                Skip::NotAFile => write!(f, "skipped {file}: not a regular file"),
            },
            Notice::Added { id, file, size } => {
                write!(f, "image {id}: added {file} ({size} bytes)")
            }
            Notice::Differs { id, file, detail } => write!(
                f,
                "image {id}: {file} differs from the catalog ({detail}); refused until it is restored or accepted with --reindex"
            ),
            Notice::Missing { id, file } => write!(
                f,
                "image {id}: {file} is catalogued but gone; refused until it is restored or forgotten with --reindex"
            ),
            Notice::Changed { id, file, detail } => {
                write!(f, "image {id}: changed {file} ({detail})")
            }
            Notice::Removed { id, file } => write!(f, "image {id}: removed ({file} is gone)"),
            Notice::Replaced { detail } => write!(
                f,
                "the old catalog was unusable ({detail}); every image counts as added"
            ),
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Lists `dir`. Hidden files (the catalog, temp files) are the store's own and ignored.
pub fn list(dir: &Path) -> Result<Listing, StoreError> {
    let unreadable = |source| StoreError::Folder {
        path: dir.display().to_string(),
        source,
    };
    let mut listing = Listing::default();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        // Follows symlinks: a link to an image is an image.
        let metadata = std::fs::metadata(&path).map_err(io_error(&path))?;
        let Some(id) = image_id_of(&name) else {
            listing.skipped.push((name, Skip::NotNamed));
            continue;
        };
        if !metadata.is_file() {
            listing.skipped.push((name, Skip::NotAFile));
            continue;
        }
        if metadata.len() > MAX_IMAGE_BYTES {
            listing.skipped.push((name, Skip::TooLarge(metadata.len())));
            continue;
        }
        let found = Found {
            id,
            file: name,
            path,
            size: metadata.len(),
        };
        if let Some(other) = listing.images.insert(id, found) {
            return Err(StoreError::Duplicate {
                id,
                first: other.file,
                second: listing.images[&id].file.clone(),
            });
        }
    }
    listing.skipped.sort();
    Ok(listing)
}

/// `Some(id)` for a file named `<id>.<ext>` (the rule is [`ImageId::from_file_name`]).
pub fn image_id_of(name: &str) -> Option<ImageId> {
    ImageId::from_file_name(name)
}

/// Size and SHA-256 of what `reader` holds, read in chunks.
pub fn hash(reader: &mut impl Read) -> std::io::Result<(u64, Digest)> {
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; HASH_CHUNK_BYTES];
    let mut size = 0u64;
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                hasher.update(&buffer[..read]);
                size += read as u64;
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok((size, Digest(hasher.finalize().into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_id_dot_extension_names_are_images() {
        assert_eq!(image_id_of("5.png"), Some(ImageId(5)));
        assert_eq!(image_id_of("0012.jpg"), Some(ImageId(12)));
        for name in [
            "5",
            "5.",
            "5.png.tmp",
            "x5.png",
            "+5.png",
            ".5.png",
            "cat.png",
        ] {
            assert_eq!(image_id_of(name), None, "{name}");
        }
    }
}
