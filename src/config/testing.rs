//! Helpers for the config unit tests: parse text as `/etc/midge.conf`, scratch directories.

use super::{parse_str, Config, ConfigError, Location};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_str(text, Path::new("/etc/midge.conf"))
}

pub(super) fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(e) => panic!("{text:?} failed: {e}"),
    }
}

pub(super) fn err(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("{text:?} parsed: {config:?}"),
        Err(e) => e.to_string(),
    }
}

pub(super) fn at(line: usize) -> Location {
    Location {
        file: PathBuf::from("/etc/midge.conf"),
        line,
    }
}

/// A scratch directory removed when dropped.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("midge-config-{}-{name}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        TempDir(dir)
    }

    pub(super) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
