//! The README's ten-line C example, compiled and run exactly as written (inside a `main`
//! that reads the PEM files into the variables it names), must print the message.

mod common;

use std::path::Path;
use std::process::Command;

use common::{compile_c, deps_dir};
use sealpost_tests::tools::ok;
use sealpost_tests::Pki;

/// The first ```c block of the README's "## C" section.
fn readme_example() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README.md");
    let section = readme
        .split("\n## C\n")
        .nth(1)
        .expect("README has a \"## C\" section");
    let block = section.split("```c\n").nth(1).expect("a ```c block in it");
    block.split("```").next().expect("closed block").to_owned()
}

#[test]
fn readme_c_example_runs_as_written() {
    let example = readme_example();
    assert!(example.lines().count() <= 10, "ten lines: {example}");
    let dir = tempfile::tempdir().expect("temp dir");
    let program = format!(
        "#include <stdio.h>\n#include <stdint.h>\n#include <time.h>\n#include <sealpost.h>\n\
         #include \"common.h\"\n\
         int main(int argc, char **argv) {{\n\
           if (argc != 7) return 2;\n\
           char *ca = read_file(argv[1], NULL), *crl = read_file(argv[2], NULL),\n\
                *pub_cert = read_file(argv[3], NULL), *pub_key = read_file(argv[4], NULL),\n\
                *sub_cert = read_file(argv[5], NULL), *sub_key = read_file(argv[6], NULL);\n\
           {example}\n\
           free(ca); free(crl); free(pub_cert); free(pub_key); free(sub_cert); free(sub_key);\n\
           return 0;\n\
         }}\n"
    );
    let source = dir.path().join("readme.c");
    std::fs::write(&source, program).expect("write readme.c");
    let exe = deps_dir().join("c-readme-example");
    compile_c(&[&source], &exe);

    let pki = Pki::new("readme-c");
    let publisher = pki.publisher("sensor-1", &["sensors/#"]);
    let alice = pki.subscriber("alice");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write PEM");
        path
    };
    // The example saves the publisher state to "pub.state" in the working directory.
    let out = ok(Command::new(&exe)
        .current_dir(dir.path())
        .arg(write("ca.pem", &pki.ca_pem()))
        .arg(pki.crl_path())
        .arg(write("pub.pem", &publisher.certificate_pem))
        .arg(write("pub.key", &publisher.private_key_pem))
        .arg(write("alice.pem", &alice.certificate_pem))
        .arg(write("alice.key", &alice.private_key_pem)));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "sensors/temp [sensor-1] 21.5 C\n"
    );
    assert!(
        std::fs::metadata(dir.path().join("pub.state")).is_ok_and(|m| m.len() > 0),
        "the publisher saved its state through save_to_file"
    );
}
