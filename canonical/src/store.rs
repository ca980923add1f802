//! The canonical image store: a folder of `<id>.<ext>` files and an in-memory catalog of their
//! size, content type and SHA-256. Writes are atomic (temp file, fsync, rename, fsync folder).
//! Reads for serving stream the file in chunks ([`ImageReader`]), hashing as they go, so a
//! request never holds a whole image and a changed file never completes a body.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use sha2::Digest as _;
use wire::message::content_type_for;
use wire::{Digest, ImageId, ImageMeta};

use crate::samples;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("image {0} changed on disk since it was catalogued (digest mismatch); not serving it")]
    Corrupt(ImageId),
    #[error("generating sample {id}: {detail}")]
    Sample { id: ImageId, detail: String },
    #[error("two files claim image id {0}; keep one")]
    Duplicate(ImageId),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[derive(Clone, Debug)]
struct Entry {
    meta: ImageMeta,
    path: PathBuf,
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// Sample ids 1..=samples are generated on first use when missing.
    samples: u64,
    catalog: RwLock<HashMap<ImageId, Entry>>,
}

impl Store {
    /// Opens `dir` (creating it), cataloguing every `<id>.<ext>` file in it.
    pub fn open(dir: &Path, samples: u64) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut catalog = HashMap::new();
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let path = entry.path();
            let Some(id) = image_id_of(&path) else {
                continue;
            };
            if !entry.file_type().map_err(io_error(&path))?.is_file() {
                continue;
            }
            let body = std::fs::read(&path).map_err(io_error(&path))?;
            let meta = meta_for(id, &path, &body);
            if catalog.insert(id, Entry { meta, path }).is_some() {
                return Err(StoreError::Duplicate(id));
            }
        }
        tracing::info!(dir = %dir.display(), images = catalog.len(), "catalog loaded");
        Ok(Store {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                samples,
                catalog: RwLock::new(catalog),
            }),
        })
    }

    /// Number of catalogued images.
    pub fn len(&self) -> usize {
        self.read_catalog().len()
    }

    /// Whether the catalog is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read_catalog(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ImageId, Entry>> {
        // A poisoned lock only means a panic elsewhere; the map itself is still consistent.
        self.inner.catalog.read().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, id: ImageId) -> Option<Entry> {
        self.read_catalog().get(&id).cloned()
    }

    /// Metadata of `id`, generating the sample first when it is a missing sample id.
    pub fn meta(&self, id: ImageId) -> Result<Option<ImageMeta>, StoreError> {
        Ok(self.ensure(id)?.map(|entry| entry.meta))
    }

    /// Metadata and verified bytes of `id`.
    pub fn read(&self, id: ImageId) -> Result<Option<(ImageMeta, Bytes)>, StoreError> {
        let Some(entry) = self.ensure(id)? else {
            return Ok(None);
        };
        let body = Bytes::from(std::fs::read(&entry.path).map_err(io_error(&entry.path))?);
        if net::frame::verify(&entry.meta, &body).is_err() {
            return Err(StoreError::Corrupt(id));
        }
        Ok(Some((entry.meta, body)))
    }

    /// Opens `id` for streaming: its catalogued metadata and the file, read chunk by chunk
    /// through [`ImageReader::next_chunk`]. A file whose length differs from the catalog is
    /// refused here, before anything is sent.
    pub fn open_image(&self, id: ImageId) -> Result<Option<ImageReader>, StoreError> {
        let Some(entry) = self.ensure(id)? else {
            return Ok(None);
        };
        let file = File::open(&entry.path).map_err(io_error(&entry.path))?;
        let length = file.metadata().map_err(io_error(&entry.path))?.len();
        if length != entry.meta.size {
            return Err(StoreError::Corrupt(id));
        }
        Ok(Some(ImageReader {
            remaining: entry.meta.size,
            meta: entry.meta,
            path: entry.path,
            file,
            hasher: sha2::Sha256::new(),
            verified: false,
        }))
    }

    fn ensure(&self, id: ImageId) -> Result<Option<Entry>, StoreError> {
        if let Some(entry) = self.entry(id) {
            return Ok(Some(entry));
        }
        if id.0 == 0 || id.0 > self.inner.samples {
            return Ok(None);
        }
        let body = samples::sample_png(id.0).map_err(|e| StoreError::Sample {
            id,
            detail: e.to_string(),
        })?;
        let path = self.inner.dir.join(format!("{id}.png"));
        write_atomic(&path, &body)?;
        let entry = Entry {
            meta: meta_for(id, &path, &body),
            path,
        };
        let mut catalog = self
            .inner
            .catalog
            .write()
            .unwrap_or_else(|p| p.into_inner());
        Ok(Some(catalog.entry(id).or_insert(entry).clone()))
    }

    /// Generates every missing sample; run in the background at start-up.
    pub fn fill_samples(&self, stop: &dyn Fn() -> bool) -> Result<(), StoreError> {
        for id in 1..=self.inner.samples {
            if stop() {
                break;
            }
            self.ensure(ImageId(id))?;
        }
        Ok(())
    }
}

/// An image being read for a reply: the open file (so a rename over it mid-reply does not
/// mix two versions) and the SHA-256 of what was read so far.
///
/// The digest is checked here, as the body streams, and not only by the receiver: the
/// receiver does verify every body before it caches or returns it, but the catalog's
/// promise is that a file changed on disk is never *served*, so the reader withholds the
/// last chunk of a body that does not match (the caller resets the stream). No reader ever
/// receives a complete body that differs from the catalogued digest, even one that did not
/// verify it.
pub struct ImageReader {
    meta: ImageMeta,
    path: PathBuf,
    file: File,
    remaining: u64,
    hasher: sha2::Sha256,
    /// Set once the whole body matched the digest.
    verified: bool,
}

impl ImageReader {
    /// The catalogued metadata the body must match.
    pub fn meta(&self) -> &ImageMeta {
        &self.meta
    }

    /// Whether every byte has been returned, verified.
    pub fn is_done(&self) -> bool {
        self.verified
    }

    /// The next chunk of at most `max` bytes (empty once done). The chunk that completes the
    /// body is returned only when the whole body matched the catalogued digest; otherwise
    /// [`StoreError::Corrupt`].
    pub fn next_chunk(&mut self, max: usize) -> Result<Bytes, StoreError> {
        if self.verified {
            return Ok(Bytes::new());
        }
        let want = self.remaining.min(max as u64) as usize;
        let mut chunk = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            match self.file.read(&mut chunk[filled..]) {
                // The file shrank under us: it no longer matches the catalog.
                Ok(0) => return Err(StoreError::Corrupt(self.meta.id)),
                Ok(read) => filled += read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(io_error(&self.path)(error)),
            }
        }
        self.hasher.update(&chunk);
        self.remaining -= want as u64;
        if self.remaining == 0 {
            let actual = Digest(std::mem::take(&mut self.hasher).finalize().into());
            if actual != self.meta.digest {
                return Err(StoreError::Corrupt(self.meta.id));
            }
            self.verified = true;
        }
        Ok(Bytes::from(chunk))
    }
}

fn meta_for(id: ImageId, path: &Path, body: &[u8]) -> ImageMeta {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    ImageMeta {
        id,
        size: body.len() as u64,
        content_type: content_type_for(extension).to_string(),
        digest: Digest::of(body),
    }
}

/// `Some(id)` for a file named `<id>.<ext>` or `<id>`; temp files and others are ignored.
fn image_id_of(path: &Path) -> Option<ImageId> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with('.') {
        return None;
    }
    let stem = name.split('.').next()?;
    let id: u64 = stem.parse().ok()?;
    // Only `<id>` and `<id>.<ext>`: skip `12.png.tmp` and the like.
    (name.matches('.').count() <= 1).then_some(ImageId(id))
}

/// Writes `body` to `path` so that readers see the old file or the whole new one, never a
/// partial one, even across a crash.
pub fn write_atomic(path: &Path, body: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("image");
    // Unique per writer, so two threads generating the same sample never share a temp file.
    static NEXT_TEMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let sequence = NEXT_TEMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temp = dir.join(format!(".{name}.{}.{sequence}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(body)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_records_size_type_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("5.jpg"), b"jpeg bytes").unwrap();
        std::fs::write(dir.path().join("6"), b"").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        std::fs::write(dir.path().join(".7.png.1.tmp"), b"ignored").unwrap();
        let store = Store::open(dir.path(), 0).unwrap();
        assert_eq!(store.len(), 2);
        let meta = store.meta(ImageId(5)).unwrap().unwrap();
        assert_eq!(meta.size, 10);
        assert_eq!(meta.content_type, "image/jpeg");
        assert_eq!(meta.digest, Digest::of(b"jpeg bytes"));
        assert_eq!(store.meta(ImageId(6)).unwrap().unwrap().size, 0);
        assert!(store.meta(ImageId(7)).unwrap().is_none());
    }

    #[test]
    fn missing_samples_are_generated_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 10).unwrap();
        let (meta, body) = store.read(ImageId(3)).unwrap().unwrap();
        assert_eq!(meta.content_type, "image/png");
        assert_eq!(std::fs::read(dir.path().join("3.png")).unwrap(), body);
        assert!(store.meta(ImageId(11)).unwrap().is_none());
        assert_eq!(Store::open(dir.path(), 0).unwrap().len(), 1);
    }

    #[test]
    fn a_file_changed_behind_the_catalog_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("9.bin"), b"original").unwrap();
        let store = Store::open(dir.path(), 0).unwrap();
        std::fs::write(dir.path().join("9.bin"), b"tampered").unwrap();
        assert!(matches!(
            store.read(ImageId(9)),
            Err(StoreError::Corrupt(_))
        ));
    }

    fn stream(store: &Store, id: u64, chunk: usize) -> Result<Vec<u8>, StoreError> {
        let mut reader = store.open_image(ImageId(id))?.expect("catalogued");
        let mut body = Vec::new();
        while !reader.is_done() {
            body.extend_from_slice(&reader.next_chunk(chunk)?);
        }
        Ok(body)
    }

    #[test]
    fn a_streamed_image_comes_back_whole_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("4.bin"), &body).unwrap();
        std::fs::write(dir.path().join("5.bin"), b"").unwrap();
        let store = Store::open(dir.path(), 0).unwrap();
        assert_eq!(stream(&store, 4, 4096).unwrap(), body);
        assert_eq!(stream(&store, 4, 20_000).unwrap(), body);
        assert!(stream(&store, 5, 4096).unwrap().is_empty());
        assert!(store.open_image(ImageId(6)).unwrap().is_none());
    }

    #[test]
    fn a_file_changed_behind_the_catalog_never_completes_a_stream() {
        let dir = tempfile::tempdir().unwrap();
        let body = vec![1u8; 10_000];
        std::fs::write(dir.path().join("9.bin"), &body).unwrap();
        let store = Store::open(dir.path(), 0).unwrap();
        let mut changed = body.clone();
        changed[9_000] = 2;
        std::fs::write(dir.path().join("9.bin"), &changed).unwrap();
        let mut reader = store.open_image(ImageId(9)).unwrap().unwrap();
        // Chunks before the end go out as read; the one that would complete the body is
        // withheld, so no reader ever holds the changed file whole.
        assert_eq!(reader.next_chunk(4096).unwrap().len(), 4096);
        assert_eq!(reader.next_chunk(4096).unwrap().len(), 4096);
        assert!(matches!(
            reader.next_chunk(4096),
            Err(StoreError::Corrupt(_))
        ));
        assert!(!reader.is_done());

        std::fs::write(dir.path().join("9.bin"), &body[..9_999]).unwrap();
        assert!(matches!(
            store.open_image(ImageId(9)),
            Err(StoreError::Corrupt(_))
        ));
    }
}
