//! PEM encoding and the files the security center reads and writes.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::CertError;

/// PEM label of a certificate.
pub const CERTIFICATE: &str = "CERTIFICATE";
/// PEM label of a PKCS#8 private key.
pub const PRIVATE_KEY: &str = "PRIVATE KEY";
/// PEM label of a certificate revocation list.
pub const CRL: &str = "X509 CRL";
/// PEM label of a certificate signing request.
pub const CSR: &str = "CERTIFICATE REQUEST";

/// Decodes the first PEM block of `text`, which must carry the label `expected`.
pub fn decode(text: &str, expected: &'static str) -> Result<Vec<u8>, CertError> {
    let block = pem::parse(text).map_err(|_| CertError::WrongPemType {
        expected,
        found: "no PEM data".into(),
    })?;
    if block.tag() != expected {
        return Err(CertError::WrongPemType {
            expected,
            found: block.tag().to_owned(),
        });
    }
    Ok(block.into_contents())
}

/// Encodes DER bytes as a PEM block with `label`.
pub fn encode(der: &[u8], label: &str) -> String {
    pem::encode(&pem::Pem::new(label, der))
}

/// Reads a text file, naming the file in the error.
pub fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads a PEM file and decodes its first block, which must carry `expected`.
pub fn read_der(path: &Path, expected: &'static str) -> Result<Vec<u8>, CertError> {
    decode(&read(path)?, expected).map_err(|e| match e {
        CertError::WrongPemType { expected, found } => CertError::WrongPemType {
            expected,
            found: format!("{found} in {}", path.display()),
        },
        other => other,
    })
}

/// Writes a public file (certificate, CRL), replacing it atomically.
pub fn write_public(path: &Path, contents: &str) -> Result<(), CertError> {
    write_atomically(path, contents, 0o644)
}

/// Writes a private key readable by the owner only (`0600`), replacing it atomically.
///
/// The mode is set when the file is created, so the key is never readable by others,
/// not even for a moment.
pub fn write_private(path: &Path, contents: &str) -> Result<(), CertError> {
    write_atomically(path, contents, 0o600)
}

fn write_atomically(path: &Path, contents: &str, mode: u32) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    let _ = fs::remove_file(tmp);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(tmp).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_label_is_named() {
        let pem = encode(b"abc", CRL);
        match decode(&pem, CERTIFICATE) {
            Err(CertError::WrongPemType { expected, found }) => {
                assert_eq!(expected, CERTIFICATE);
                assert_eq!(found, CRL);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            decode("not pem", CERTIFICATE),
            Err(CertError::WrongPemType { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key.pem");
        write_private(&path, "secret").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read(&path).unwrap(), "secret");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = read(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"));
    }
}
