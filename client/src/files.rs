//! Atomic replacement of small state files (the publisher's state, the subscriber's
//! replay window, KDC credentials): a crash leaves either the old or the new file, never
//! a mix, and the file is readable by its owner only (it may hold keys or passwords).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ClientError;

/// Writes `dir/name` atomically with mode 0600: temporary file, fsync, rename, fsync dir.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ClientError> {
    fs::create_dir_all(dir).map_err(|e| state_err(dir, e))?;
    let path = dir.join(name);
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(|e| state_err(&tmp, e))?;
    file.write_all(bytes).map_err(|e| state_err(&tmp, e))?;
    file.sync_all().map_err(|e| state_err(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(|e| state_err(&path, e))?;
    // The rename is durable only once the directory entry is.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn state_err(path: &Path, e: std::io::Error) -> ClientError {
    ClientError::State {
        path: path.to_owned(),
        detail: e.to_string(),
    }
}
