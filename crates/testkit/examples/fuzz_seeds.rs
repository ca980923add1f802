//! Writes the seed inputs of every fuzz target into `fuzz/corpus/<target>/seed-<n>`: valid
//! encodings made by each crate's `fuzzing::seeds`. Run it again after a wire type changes:
//! `cargo run -p flotilla-testkit --example fuzz_seeds`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit sits two levels inside the workspace")
        .join("fuzz/corpus");
    let mut targets = wire::fuzzing::seeds();
    targets.push(("election_messages", election::fuzzing::seeds()));
    targets.push(("catalog", canonical::fuzzing::seeds()));
    targets.push(("nfqueue_datagram", chaos::fuzzing::seeds()));
    for (target, seeds) in targets {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (number, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{number}")), seed)?;
        }
        eprintln!("{target}: {} seeds in {}", seeds.len(), dir.display());
    }
    Ok(())
}
