//! Writes the seed corpus of the fuzz targets into `fuzz/corpus/<target>/seed-<name>`
//! (see `fuzz/README.md`): `cargo run -p sealpost-tests --example fuzz_seeds`.
//! Existing seeds are replaced; other corpus entries are left alone.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, name, bytes) in sealpost_tests::fuzz::seeds::all() {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    println!("seeds written under {}", corpus.display());
    Ok(())
}
