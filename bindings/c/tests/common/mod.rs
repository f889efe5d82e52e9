//! Building C programs against this build of the library, for the tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use sealpost_tests::tools::ok;

/// `target/<profile>/deps`, where the test runs from and cargo leaves `libsealpost.a`
/// for this test build.
pub fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().expect("target/<profile>/deps").to_owned()
}

/// Compiles C `sources` with `-Wall -Wextra -Werror`, statically linked to this build of
/// the library and to libmosquitto, into `out`.
pub fn compile_c(sources: &[&Path], out: &Path) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let library = deps_dir().join("libsealpost.a");
    assert!(library.exists(), "{} not built", library.display());
    ok(
        Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .args(["-Wall", "-Wextra", "-Werror", "-g", "-I"])
            .arg(manifest.join("include"))
            .arg("-I")
            .arg(manifest.join("examples"))
            .args(sources)
            .arg(&library)
            .args(["-lmosquitto", "-lpthread", "-ldl", "-lm", "-o"])
            .arg(out),
    );
}
