//! The edge's image cache: least-recently-used, bounded by the bytes it holds (not the number
//! of images), holding refcounted `Bytes` so a hit is served without copying.

use std::sync::Mutex;

use bytes::Bytes;
use lru::LruCache;
use wire::{ImageId, ImageMeta, VerifiedMeta};

/// A verified image held in memory: metadata the canonical signed (the type says so) and a
/// body that matched its signed digest.
#[derive(Clone, Debug)]
pub struct CachedImage {
    pub meta: VerifiedMeta,
    pub body: Bytes,
}

/// Counts describing the cache right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub items: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
}

/// What an insert did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inserted {
    /// Whether the image is now cached (an image larger than the whole cache is not).
    pub stored: bool,
    /// How many images were evicted to make room.
    pub evicted: u64,
}

/// A byte-bounded LRU cache. The lock is a std mutex held only for map operations, never
/// across an await.
pub struct ImageCache {
    capacity_bytes: u64,
    inner: Mutex<Inner>,
}

struct Inner {
    images: LruCache<ImageId, CachedImage>,
    bytes: u64,
}

impl ImageCache {
    /// A cache holding at most `capacity_bytes` of image bodies.
    pub fn new(capacity_bytes: u64) -> ImageCache {
        ImageCache {
            capacity_bytes,
            inner: Mutex::new(Inner {
                // Bounded by bytes below, not by count.
                images: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters: at worst the byte count is off until the next eviction.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The image, marking it most recently used.
    pub fn get(&self, id: ImageId) -> Option<CachedImage> {
        self.lock().images.get(&id).cloned()
    }

    /// The image's metadata, without touching its recency.
    pub fn meta(&self, id: ImageId) -> Option<ImageMeta> {
        let inner = self.lock();
        inner
            .images
            .peek(&id)
            .map(|image| image.meta.signed().meta.clone())
    }

    /// Stores `image`, evicting least-recently-used images until it fits.
    pub fn insert(&self, image: CachedImage) -> Inserted {
        let size = image.body.len() as u64;
        if size > self.capacity_bytes {
            return Inserted::default();
        }
        let mut inner = self.lock();
        if let Some(previous) = inner.images.pop(&image.meta.id) {
            inner.bytes -= previous.body.len() as u64;
        }
        let mut evicted = 0;
        while inner.bytes + size > self.capacity_bytes {
            match inner.images.pop_lru() {
                Some((_, old)) => {
                    inner.bytes -= old.body.len() as u64;
                    evicted += 1;
                }
                None => break,
            }
        }
        inner.bytes += size;
        inner.images.put(image.meta.id, image);
        Inserted {
            stored: true,
            evicted,
        }
    }

    /// Current counts.
    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            items: inner.images.len() as u64,
            bytes: inner.bytes,
            capacity_bytes: self.capacity_bytes,
        }
    }

    /// Up to `limit` cached ids, most recently used first.
    pub fn ids(&self, limit: usize) -> Vec<ImageId> {
        self.lock()
            .images
            .iter()
            .take(limit)
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use wire::pki::ClusterCa;
    use wire::{Digest, OriginSigner, OriginTrust, Role};

    /// A canonical's signer and the trust that verifies it: the cache only takes verified
    /// metadata, so the tests make it the real way.
    fn origin() -> &'static (OriginSigner, OriginTrust) {
        static ORIGIN: OnceLock<(OriginSigner, OriginTrust)> = OnceLock::new();
        ORIGIN.get_or_init(|| {
            let ca = ClusterCa::generate().unwrap();
            let issued = ca.issue(Role::Canonical).unwrap();
            (
                OriginSigner::from_pem(&issued.cert_pem, &issued.key_pem).unwrap(),
                OriginTrust::from_ca_pem(ca.cert_pem()).unwrap(),
            )
        })
    }

    fn image(id: u64, size: usize) -> CachedImage {
        let body = Bytes::from(vec![id as u8; size]);
        let meta = ImageMeta {
            id: ImageId(id),
            size: size as u64,
            content_type: "image/png".into(),
            digest: Digest::of(&body),
        };
        let (signer, trust) = origin();
        CachedImage {
            meta: trust.verify(signer.sign(meta).unwrap()).unwrap(),
            body,
        }
    }

    #[test]
    fn evicts_least_recently_used_by_bytes() {
        let cache = ImageCache::new(1000);
        cache.insert(image(1, 400));
        cache.insert(image(2, 400));
        assert!(cache.get(ImageId(1)).is_some()); // 2 is now least recently used
        let inserted = cache.insert(image(3, 400));
        assert_eq!(inserted.evicted, 1);
        assert!(cache.get(ImageId(2)).is_none());
        assert!(cache.get(ImageId(1)).is_some());
        assert_eq!(cache.stats().bytes, 800);
    }

    #[test]
    fn never_exceeds_capacity_and_skips_oversized_images() {
        let cache = ImageCache::new(1000);
        for id in 0..50 {
            cache.insert(image(id, 37 * (id as usize % 9) + 1));
            assert!(cache.stats().bytes <= 1000);
        }
        assert!(!cache.insert(image(99, 1001)).stored);
        assert!(cache.get(ImageId(99)).is_none());
    }

    #[test]
    fn reinserting_an_id_does_not_double_count() {
        let cache = ImageCache::new(1000);
        cache.insert(image(1, 300));
        cache.insert(image(1, 300));
        assert_eq!(
            cache.stats(),
            CacheStats {
                items: 1,
                bytes: 300,
                capacity_bytes: 1000
            }
        );
    }
}
