//! Object sizes as typed on the command line (`10k,100k,1m,5m`) and the objects themselves:
//! one file of seeded random bytes per size, `<id>.bin`, in a folder both servers read.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

/// Largest object: the canonical serves files up to 64 MiB.
pub const MAX_OBJECT_BYTES: u64 = 64 * 1024 * 1024;
/// Most sizes in one run.
pub const MAX_SIZES: usize = 16;
/// Seed of the objects' bytes: the same bytes every run, so a catalog made once stays valid.
const OBJECT_SEED: u64 = 0x666c_6f74_696c_6c61;

/// Parses `10k,100k,1m,5m` (k = 1024 bytes, m = 1024 k; a bare number is bytes).
pub fn parse_sizes(text: &str) -> Result<Vec<u64>, String> {
    let sizes = text
        .split(',')
        .map(|word| parse_size(word.trim()))
        .collect::<Result<Vec<u64>, String>>()?;
    if sizes.len() > MAX_SIZES {
        return Err(format!("at most {MAX_SIZES} sizes, not {}", sizes.len()));
    }
    Ok(sizes)
}

fn parse_size(word: &str) -> Result<u64, String> {
    let bad = || {
        format!("`{word}` is not a size like 10k, 1m or 4096 (k = 1024 bytes, m = 1024 k), from 1 byte to 64m")
    };
    let lower = word.to_ascii_lowercase();
    let (digits, unit) = match lower.strip_suffix('k') {
        Some(digits) => (digits, 1024),
        None => match lower.strip_suffix('m') {
            Some(digits) => (digits, 1024 * 1024),
            None => (lower.as_str(), 1),
        },
    };
    let number: u64 = digits.parse().map_err(|_| bad())?;
    match number.checked_mul(unit) {
        Some(bytes) if (1..=MAX_OBJECT_BYTES).contains(&bytes) => Ok(bytes),
        _ => Err(bad()),
    }
}

/// `10k`, `1m`, `1500` (how the table names a size).
pub fn size_label(bytes: u64) -> String {
    if bytes.is_multiple_of(1024 * 1024) {
        format!("{}m", bytes / (1024 * 1024))
    } else if bytes.is_multiple_of(1024) {
        format!("{}k", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// The object of the `position`-th size has id `position + 1`.
pub fn object_id(position: usize) -> u64 {
    position as u64 + 1
}

/// Writes one object per size into `dir` (readable by anyone: a container's unprivileged user
/// reads them through a read-only mount), rewriting only files whose bytes differ.
pub fn write_objects(dir: &Path, sizes: &[u64]) -> anyhow::Result<Vec<PathBuf>> {
    // Each size gets its own stream, so an object does not change with the sizes around it.
    let objects: Vec<Seeded> = sizes
        .iter()
        .enumerate()
        .map(|(position, &size)| Seeded {
            id: object_id(position),
            size,
            seed: OBJECT_SEED ^ size,
        })
        .collect();
    write_seeded(dir, &objects)
}

/// One file of seeded random bytes, `<id>.bin`.
#[derive(Clone, Copy, Debug)]
pub struct Seeded {
    pub id: u64,
    pub size: u64,
    pub seed: u64,
}

/// Writes `objects` into `dir` (readable by anyone: a container's unprivileged user reads them
/// through a read-only mount), rewriting only files whose bytes differ and removing every
/// other file, since the canonical would serve it under an id the caller reuses.
pub fn write_seeded(dir: &Path, objects: &[Seeded]) -> anyhow::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} readable", dir.display()))?;
    let mut paths = Vec::with_capacity(objects.len());
    for object in objects {
        let path = dir.join(format!("{}.bin", object.id));
        let mut bytes = vec![0u8; object.size as usize];
        SmallRng::seed_from_u64(object.seed).fill_bytes(&mut bytes);
        if fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            let mut file =
                fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .with_context(|| format!("making {} readable", path.display()))?;
        paths.push(path);
    }
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if !paths.contains(&path) {
            let _ = fs::remove_file(&path);
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_the_rest() {
        assert_eq!(
            parse_sizes("10k,100k,1m,5m").unwrap(),
            vec![10 * 1024, 100 * 1024, 1024 * 1024, 5 * 1024 * 1024]
        );
        assert_eq!(parse_sizes("4096, 2K").unwrap(), vec![4096, 2048]);
        for bad in [
            "3x",
            "",
            "0",
            "k",
            "65m",
            "1,,2",
            "-1k",
            "99999999999999999999m",
        ] {
            let error = parse_sizes(bad).unwrap_err();
            assert!(!error.contains('\n'), "{bad}: {error}");
        }
        assert_eq!(size_label(10 * 1024), "10k");
        assert_eq!(size_label(5 * 1024 * 1024), "5m");
        assert_eq!(size_label(1500), "1500");
    }

    #[test]
    fn objects_are_the_same_bytes_every_time() {
        let dir = std::env::temp_dir().join(format!("flotilla-objects-{}", std::process::id()));
        let first = write_objects(&dir, &[1000, 2048]).unwrap();
        let bytes = fs::read(&first[1]).unwrap();
        assert_eq!(bytes.len(), 2048);
        write_objects(&dir, &[1000, 2048]).unwrap();
        assert_eq!(fs::read(&first[1]).unwrap(), bytes);
        write_objects(&dir, &[1000]).unwrap();
        assert!(
            !first[1].exists(),
            "an object of a size no longer asked for is removed"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
