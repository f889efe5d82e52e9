//! The CA's revocation list as a file, read the same way by both SDKs: at start (a list
//! that cannot be read is an error of the start), and again whenever the SDK is about to
//! rely on it (before every rekey, periodically), installing only what changed.
//!
//! A reload that fails (unreadable file, not text, a list the core refuses because the CA
//! did not sign it or it is older than the one in force) leaves the list in force: an SDK
//! never falls back to no list.

use std::path::{Path, PathBuf};

/// A revocation list file that could not be read or installed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("revocation list {}: {detail}", path.display())]
pub struct CrlFileError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub detail: String,
}

/// A revocation list file, and what of it was last installed.
#[derive(Debug)]
pub struct CrlFile {
    path: PathBuf,
    /// The bytes last installed, so that an unchanged file is not verified again.
    installed: Vec<u8>,
}

impl CrlFile {
    /// The list at `path` (not read yet).
    pub fn new(path: PathBuf) -> CrlFile {
        CrlFile {
            path,
            installed: Vec::new(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the list at start, as the PEM text for the session core's configuration,
    /// and counts it as installed.
    pub fn read_initial(&mut self) -> Result<String, CrlFileError> {
        let bytes = self.read()?;
        let pem = self.text(&bytes)?.to_owned();
        self.installed = bytes;
        Ok(pem)
    }

    /// Reads the file again and, if it changed since the list last installed, hands its
    /// text to `install` (the session core's `set_revocation_list`). Returns whether a
    /// new list was installed; on an error the list in force stays.
    pub fn reload(
        &mut self,
        install: impl FnOnce(&str) -> Result<(), String>,
    ) -> Result<bool, CrlFileError> {
        let bytes = self.read()?;
        if bytes == self.installed {
            return Ok(false);
        }
        install(self.text(&bytes)?).map_err(|detail| self.error(detail))?;
        self.installed = bytes;
        Ok(true)
    }

    fn read(&self) -> Result<Vec<u8>, CrlFileError> {
        std::fs::read(&self.path).map_err(|e| self.error(e.to_string()))
    }

    fn text<'a>(&self, bytes: &'a [u8]) -> Result<&'a str, CrlFileError> {
        std::str::from_utf8(bytes).map_err(|_| self.error("not PEM text".into()))
    }

    fn error(&self, detail: String) -> CrlFileError {
        CrlFileError {
            path: self.path.clone(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &[u8]) -> (tempfile::TempDir, CrlFile) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crl.pem");
        std::fs::write(&path, text).unwrap();
        (dir, CrlFile::new(path))
    }

    #[test]
    fn only_a_changed_file_is_installed_again() {
        let (dir, mut crl) = file(b"list 1");
        assert_eq!(crl.read_initial().unwrap(), "list 1");
        let mut installed = Vec::new();
        assert!(!crl.reload(|_| panic!("unchanged: not installed")).unwrap());
        std::fs::write(dir.path().join("crl.pem"), b"list 2").unwrap();
        assert!(crl
            .reload(|pem| {
                installed.push(pem.to_owned());
                Ok(())
            })
            .unwrap());
        assert_eq!(installed, ["list 2"]);
    }

    #[test]
    fn a_refused_unreadable_or_binary_list_is_an_error_and_is_tried_again() {
        let (dir, mut crl) = file(b"list 1");
        crl.read_initial().unwrap();
        let path = dir.path().join("crl.pem");
        std::fs::write(&path, b"older list").unwrap();
        let refused = crl.reload(|_| Err("older than the list in force".into()));
        assert!(refused
            .unwrap_err()
            .to_string()
            .contains("older than the list in force"));
        // Still not installed: the next reload offers it again.
        assert!(crl.reload(|_| Ok(())).unwrap());
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(crl
            .reload(|_| Ok(()))
            .unwrap_err()
            .detail
            .contains("not PEM text"));
        std::fs::remove_file(&path).unwrap();
        let missing = crl.reload(|_| Ok(())).unwrap_err();
        assert_eq!(missing.path, path);
        let (_dir, mut never) = file(b"x");
        std::fs::remove_file(never.path()).unwrap();
        assert!(never.read_initial().is_err());
    }
}
