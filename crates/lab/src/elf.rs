//! Checks that a binary is statically linked, from its ELF headers: no program interpreter
//! and no shared library dependency. A static-pie executable keeps a dynamic section for
//! relocating itself, so the check is on `DT_NEEDED` entries rather than on `PT_DYNAMIC`.

use std::path::Path;

use anyhow::Context;

/// Program header type of the dynamic section.
const PT_DYNAMIC: u32 = 2;
/// Program header type naming the dynamic loader.
const PT_INTERP: u32 = 3;
/// Dynamic entry tag naming a needed shared library.
const DT_NEEDED: u64 = 1;
/// Dynamic entry tag ending the dynamic section.
const DT_NULL: u64 = 0;

/// How a binary is linked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Linkage {
    Static,
    /// Loaded by an interpreter or needing shared libraries; the detail says which.
    Dynamic(String),
}

/// Reads and classifies the ELF file at `path`.
pub fn linkage(path: &Path) -> anyhow::Result<Linkage> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    classify(&bytes).with_context(|| format!("{} is not a 64-bit ELF file", path.display()))
}

/// Classifies a 64-bit little-endian ELF image.
pub fn classify(bytes: &[u8]) -> anyhow::Result<Linkage> {
    anyhow::ensure!(bytes.get(..4) == Some(b"\x7fELF"), "no ELF magic");
    anyhow::ensure!(bytes.get(4) == Some(&2), "not ELFCLASS64");
    anyhow::ensure!(bytes.get(5) == Some(&1), "not little-endian");
    let program_headers = read_u64(bytes, 0x20)? as usize;
    let entry_size = read_u16(bytes, 0x36)? as usize;
    let entries = read_u16(bytes, 0x38)? as usize;
    let mut needed = 0;
    for entry in 0..entries {
        let header = program_headers.saturating_add(entry * entry_size);
        match read_u32(bytes, header)? {
            PT_INTERP => return Ok(Linkage::Dynamic("it names a program interpreter".into())),
            PT_DYNAMIC => {
                let offset = read_u64(bytes, header.saturating_add(0x08))? as usize;
                let size = read_u64(bytes, header.saturating_add(0x20))? as usize;
                for tag_at in (offset..offset.saturating_add(size)).step_by(16) {
                    match read_u64(bytes, tag_at)? {
                        DT_NULL => break,
                        DT_NEEDED => needed += 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(match needed {
        0 => Linkage::Static,
        count => Linkage::Dynamic(format!("it needs {count} shared libraries")),
    })
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> anyhow::Result<[u8; N]> {
    bytes
        .get(at..at.saturating_add(N))
        .and_then(|slice| slice.try_into().ok())
        .context("truncated header")
}

fn read_u16(bytes: &[u8], at: usize) -> anyhow::Result<u16> {
    field(bytes, at).map(u16::from_le_bytes)
}

fn read_u32(bytes: &[u8], at: usize) -> anyhow::Result<u32> {
    field(bytes, at).map(u32::from_le_bytes)
}

fn read_u64(bytes: &[u8], at: usize) -> anyhow::Result<u64> {
    field(bytes, at).map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 image: header, then program headers of the given types; a PT_DYNAMIC
    /// segment points at `dynamic` (tag, value) pairs placed after the headers.
    fn image(types: &[u32], dynamic: &[(u64, u64)]) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x40];
        bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
        bytes[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        let dynamic_at = 0x40 + 56 * types.len();
        for kind in types {
            let mut header = vec![0u8; 56];
            header[..4].copy_from_slice(&kind.to_le_bytes());
            header[0x08..0x10].copy_from_slice(&(dynamic_at as u64).to_le_bytes());
            header[0x20..0x28].copy_from_slice(&((dynamic.len() * 16) as u64).to_le_bytes());
            bytes.extend(header);
        }
        for (tag, value) in dynamic {
            bytes.extend(tag.to_le_bytes());
            bytes.extend(value.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn static_and_static_pie_are_static() {
        assert_eq!(classify(&image(&[1], &[])).unwrap(), Linkage::Static);
        let static_pie = image(&[1, PT_DYNAMIC], &[(0x6ffffffb, 0), (DT_NULL, 0)]);
        assert_eq!(classify(&static_pie).unwrap(), Linkage::Static);
    }

    #[test]
    fn interpreters_and_needed_libraries_are_dynamic() {
        assert!(matches!(
            classify(&image(&[1, PT_INTERP], &[])).unwrap(),
            Linkage::Dynamic(_)
        ));
        let needs_libc = image(&[PT_DYNAMIC], &[(DT_NEEDED, 1), (DT_NULL, 0)]);
        assert!(matches!(
            classify(&needs_libc).unwrap(),
            Linkage::Dynamic(_)
        ));
        // The test binary itself is an ordinary dynamic executable.
        let me = std::env::current_exe().unwrap();
        assert!(matches!(linkage(&me).unwrap(), Linkage::Dynamic(_)));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(classify(b"#!/bin/sh").is_err());
        assert!(classify(&image(&[1], &[])[..0x30]).is_err());
    }
}
