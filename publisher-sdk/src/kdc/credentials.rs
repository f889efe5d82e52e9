//! The credentials file a publisher hands a reader: which KDC, which reader id, which
//! password. JSON, written with mode 0600 because it holds a password.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::api::KdcAddress;
use super::KdcError;

/// Login credentials for one KDC, as issued by `sealpost-pub kdc add-reader`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdcCredentials {
    /// The KDC address (`https://...`), exactly as it appears in key indexes.
    pub kdc: String,
    /// The reader id.
    pub reader: String,
    /// The password (shown once; the KDC stores only its argon2 hash).
    pub password: String,
}

impl std::fmt::Debug for KdcCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KdcCredentials")
            .field("kdc", &self.kdc)
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

impl KdcCredentials {
    /// Parses a credentials file's JSON and checks the address is `https://`.
    pub fn from_json(text: &str) -> Result<KdcCredentials, KdcError> {
        let mut c: KdcCredentials = serde_json::from_str(text)
            .map_err(|_| KdcError::Credentials("not a sealpost KDC credentials file".into()))?;
        c.kdc = KdcAddress::parse(&c.kdc)
            .map_err(|e| KdcError::Credentials(e.to_string()))?
            .url;
        if c.reader.is_empty() || c.password.is_empty() {
            return Err(KdcError::Credentials("empty reader or password".into()));
        }
        Ok(c)
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("credentials serialise") + "\n"
    }

    /// Reads a credentials file.
    pub fn load(path: &Path) -> Result<KdcCredentials, KdcError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| KdcError::Credentials(format!("cannot read the file: {}", e.kind())))?;
        KdcCredentials::from_json(&text)
    }

    /// Writes the credentials to `path` atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), KdcError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| KdcError::Credentials(format!("bad file name {}", path.display())))?;
        crate::state::write_atomically(dir, name, self.to_json().as_bytes())
            .map_err(|e| KdcError::Credentials(e.to_string()))
    }
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
        };
        assert!(!format!("{c:?}").contains("s3cret"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alice.kdc.json");
        c.save(&path).unwrap();
        assert_eq!(KdcCredentials::load(&path).unwrap(), c);
        let http = c.to_json().replace("https", "http");
        assert!(KdcCredentials::from_json(&http).is_err());
    }
}
