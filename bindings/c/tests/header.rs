//! The committed C header (`include/sealpost.h`) is exactly what cbindgen generates from
//! the sources, so C programs never compile against a stale API. With `SEALPOST_BLESS=1`
//! the test writes the header instead of comparing.

use std::path::Path;

#[test]
fn committed_header_matches_cbindgen() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let path = dir.join("include/sealpost.h");
    if std::env::var_os("SEALPOST_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write include/sealpost.h");
        return;
    }
    let committed = std::fs::read(&path).expect("include/sealpost.h is committed");
    assert!(
        committed == generated,
        "include/sealpost.h is stale: regenerate it with \
         `SEALPOST_BLESS=1 cargo test -p sealpost-c --test header` and commit it"
    );
}
