//! The credentials file a publisher hands a reader: which KDC, which reader id, which
//! password, and which certificate the KDC must present. JSON, written with mode 0600
//! because it holds a password.
//!
//! The certificate pin is what keeps the password from going to an impostor: the CA
//! issues server certificates for other services too (the broker's names the same host),
//! so "issued by the CA for this host" does not single out the KDC; its exact
//! certificate does.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::api::KdcAddress;

/// Login credentials for one KDC, as issued by `sealpost-pub kdc add-reader`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdcCredentials {
    /// The KDC address (`https://...`), exactly as it appears in key indexes.
    pub kdc: String,
    /// The reader id.
    pub reader: String,
    /// The password (shown once; the KDC stores only its argon2 hash).
    pub password: String,
    /// SHA-256 of the KDC's TLS certificate (DER), lowercase hex: the client refuses any
    /// other certificate before it sends the password.
    pub kdc_certificate_sha256: String,
}

impl std::fmt::Debug for KdcCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KdcCredentials")
            .field("kdc", &self.kdc)
            .field("reader", &self.reader)
            .field("kdc_certificate_sha256", &self.kdc_certificate_sha256)
            .finish_non_exhaustive()
    }
}

impl KdcCredentials {
    /// Parses a credentials file's JSON and checks the address is `https://` and the
    /// certificate pin is a SHA-256 in hex.
    pub fn from_json(text: &str) -> Result<KdcCredentials, CredentialsError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|_| CredentialsError("not a sealpost KDC credentials file".into()))?;
        if value.get("kdc_certificate_sha256").is_none() {
            return Err(CredentialsError(
                "no kdc_certificate_sha256 (the KDC certificate pin): issue the credentials \
                 again with sealpost-pub kdc add-reader"
                    .into(),
            ));
        }
        let mut c: KdcCredentials = serde_json::from_value(value)
            .map_err(|_| CredentialsError("not a sealpost KDC credentials file".into()))?;
        c.kdc_certificate_sha256 = parse_pin(&c.kdc_certificate_sha256)?;
        c.kdc = KdcAddress::parse(&c.kdc)
            .map_err(|e| CredentialsError(e.to_string()))?
            .url;
        if c.reader.is_empty() || c.password.is_empty() {
            return Err(CredentialsError("empty reader or password".into()));
        }
        Ok(c)
    }

    /// The certificate pin as bytes (checked by [`KdcCredentials::from_json`]; checked
    /// again here for credentials built in code).
    pub fn certificate_pin(&self) -> Result<[u8; 32], CredentialsError> {
        let hex = parse_pin(&self.kdc_certificate_sha256)?;
        let mut pin = [0u8; 32];
        for (i, byte) in pin.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| CredentialsError("bad kdc_certificate_sha256".into()))?;
        }
        Ok(pin)
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("credentials serialise") + "\n"
    }

    /// Reads a credentials file.
    pub fn load(path: &Path) -> Result<KdcCredentials, CredentialsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CredentialsError(format!("cannot read the file: {}", e.kind())))?;
        KdcCredentials::from_json(&text)
    }

    /// Writes the credentials to `path` atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), CredentialsError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| CredentialsError(format!("bad file name {}", path.display())))?;
        crate::files::write_atomically(dir, name, self.to_json().as_bytes())
            .map_err(|e| CredentialsError(e.to_string()))
    }
}

/// Why a credentials file could not be read, parsed or written. Never contains the
/// password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("KDC credentials: {0}")]
pub struct CredentialsError(pub String);

/// A SHA-256 in hex (either case), normalised to lowercase.
fn parse_pin(text: &str) -> Result<String, CredentialsError> {
    let pin = text.trim().to_ascii_lowercase();
    if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CredentialsError(
            "kdc_certificate_sha256 is not a SHA-256 in hex".into(),
        ));
    }
    Ok(pin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_hides_the_password() {
        let c = KdcCredentials {
            kdc: "https://127.0.0.1:8443".into(),
            reader: "alice".into(),
            password: "s3cret-pw".into(),
            kdc_certificate_sha256: "AB".repeat(32),
        };
        assert_eq!(c.certificate_pin().unwrap(), [0xab; 32]);
        assert!(!format!("{c:?}").contains("s3cret"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alice.kdc.json");
        c.save(&path).unwrap();
        let loaded = KdcCredentials::load(&path).unwrap();
        assert_eq!(loaded.kdc_certificate_sha256, "ab".repeat(32));
        assert_eq!(loaded.password, c.password);
        let http = c.to_json().replace("https", "http");
        assert!(KdcCredentials::from_json(&http).is_err());
        // No pin, or a malformed one: refused, never "trust any certificate".
        let mut value: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
        value
            .as_object_mut()
            .unwrap()
            .remove("kdc_certificate_sha256");
        let err = KdcCredentials::from_json(&value.to_string()).unwrap_err();
        assert!(err.to_string().contains("pin"), "{err}");
        let short = c.to_json().replace(&"AB".repeat(32), "abcd");
        assert!(KdcCredentials::from_json(&short).is_err());
    }
}
