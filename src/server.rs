//! The mio event loop (work in progress).

use crate::config::Config;

/// Runs the broker until it is asked to stop.
pub fn run(_config: Config) -> std::io::Result<()> {
    Err(std::io::Error::other("server not built yet"))
}
