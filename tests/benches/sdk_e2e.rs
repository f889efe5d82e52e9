//! End-to-end benchmark of the SDKs through a real broker (see docs/BENCHMARKS.md,
//! "SDK end to end"). A bench target rather than a test: it measures, it asserts nothing.
#![forbid(unsafe_code)]

mod certs_cache {
    use std::path::PathBuf;

    use rayon::prelude::*;
    use sealpost_certs::{CertificateAuthority, Profile, Validity};

    /// Where generated subscriber certificates are kept between runs: generating 10,000
    /// RSA-2048 keys takes many minutes, measuring with them does not.
    pub fn dir() -> PathBuf {
        std::env::var_os("SEALPOST_BENCH_CERTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sealpost-bench-certs")
            })
    }

    /// The cached CA and `n` subscriber certificates (DER), generating what is missing.
    pub fn load(n: usize) -> (CertificateAuthority, Vec<Vec<u8>>) {
        let dir = dir();
        std::fs::create_dir_all(&dir).expect("cache dir");
        let ca_cert = dir.join("ca.pem");
        let ca_key = dir.join("ca.key");
        let ca = if ca_cert.exists() {
            CertificateAuthority::from_pem(
                &std::fs::read_to_string(&ca_cert).unwrap(),
                &std::fs::read_to_string(&ca_key).unwrap(),
            )
            .expect("cached CA")
        } else {
            let ca = CertificateAuthority::create("bench CA", Validity::days_from_now(3650))
                .expect("CA");
            std::fs::write(&ca_key, ca.private_key_pem()).unwrap();
            std::fs::write(&ca_cert, ca.certificate_pem()).unwrap();
            ca
        };
        let path = |i: usize| dir.join(format!("sub-{i:05}.pem"));
        let missing: Vec<usize> = (0..n).filter(|i| !path(*i).exists()).collect();
        if !missing.is_empty() {
            eprintln!(
                "generating {} RSA-2048 subscriber certificates into {} (once)...",
                missing.len(),
                dir.display()
            );
            let started = std::time::Instant::now();
            let done = std::sync::atomic::AtomicUsize::new(0);
            missing.par_iter().for_each(|i| {
                let issued = ca
                    .issue(
                        &Profile::Subscriber {
                            id: format!("sub-{i:05}"),
                        },
                        Validity::days_from_now(3650),
                    )
                    .expect("issue subscriber");
                // Certificate then key in one file; written under a temporary name and
                // renamed so an interrupted run never leaves half a file.
                let tmp = dir.join(format!(".sub-{i:05}.tmp"));
                std::fs::write(
                    &tmp,
                    format!("{}{}", issued.certificate_pem, issued.private_key_pem),
                )
                .unwrap();
                std::fs::rename(&tmp, path(*i)).unwrap();
                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if d % 500 == 0 {
                    eprintln!("  {d} in {:.0?}", started.elapsed());
                }
            });
        }
        let ders = (0..n)
            .map(|i| {
                let text = std::fs::read_to_string(path(i)).unwrap();
                sealpost_certs::pemfile::decode(&text, sealpost_certs::pemfile::CERTIFICATE)
                    .unwrap()
            })
            .collect();
        (ca, ders)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--certs-only") {
        certs_cache::load(10_000);
    }
}
