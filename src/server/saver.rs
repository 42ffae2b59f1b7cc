//! The writer of dynamic security files: one helper thread, started when dynamic security is
//! on, that writes each file the broker hands over atomically (a temporary file beside it,
//! fsync, rename, then fsync of the directory; mode 0600, for it holds password hashes), so
//! the loop never waits on the disk. A reader sees the old file or the new one, never half.
//! When several versions of one file wait, only the newest is written.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The helper thread and the way to it.
pub(super) struct Saver {
    sender: Option<Sender<(PathBuf, Vec<u8>)>>,
    thread: Option<JoinHandle<()>>,
    /// Files handed over, and files written (or failed), so far.
    queued: u64,
    done: Arc<AtomicU64>,
}

impl Saver {
    /// Starts the thread.
    pub(super) fn start() -> std::io::Result<Saver> {
        let (sender, receiver) = mpsc::channel();
        let done = Arc::new(AtomicU64::new(0));
        let finished = Arc::clone(&done);
        let thread = std::thread::Builder::new()
            .name("midge-dynsec".into())
            .spawn(move || run(&receiver, &finished))?;
        Ok(Saver {
            sender: Some(sender),
            thread: Some(thread),
            queued: 0,
            done,
        })
    }

    /// Hands `json` over to be written to `path`; does not wait.
    pub(super) fn save(&mut self, path: PathBuf, json: Vec<u8>) {
        let sent = self
            .sender
            .as_ref()
            .is_some_and(|s| s.send((path.clone(), json)).is_ok());
        if sent {
            self.queued += 1;
        } else {
            log::error!(
                "Error: dynsec: the writer thread is gone; {} is not saved.",
                path.display()
            );
        }
    }

    /// Waits (at most `limit`) until every file handed over is written: before SIGHUP reads
    /// the files again, so a change made in memory is never lost to an older file.
    pub(super) fn wait_idle(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while self.done.load(Ordering::Acquire) < self.queued {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Writes what is waiting and stops the thread (at exit).
    pub(super) fn close(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("Error: dynsec: the writer thread failed.");
            }
        }
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        self.close();
    }
}

/// The thread: writes files until the sender is dropped.
fn run(receiver: &Receiver<(PathBuf, Vec<u8>)>, done: &AtomicU64) {
    let mut waiting: VecDeque<(PathBuf, Vec<u8>)> = VecDeque::new();
    while let Ok(first) = receiver.recv() {
        waiting.push_back(first);
        waiting.extend(receiver.try_iter());
        while let Some((path, json)) = waiting.pop_front() {
            let newer = waiting.iter().any(|(p, _)| *p == path);
            if !newer {
                match write_atomically(&path, &json) {
                    Ok(()) => log::debug!("dynsec: saved {}.", path.display()),
                    Err(e) => log::error!(
                        "Error: dynsec: unable to save {}: {e}; the change is in force but not \
                         on disk.",
                        path.display()
                    ),
                }
            }
            done.fetch_add(1, Ordering::Release);
        }
    }
}

/// Writes `bytes` to `path` so that the file is either the old one or the new one: a
/// temporary file beside it (`PATH.new`, mode 0600), fsynced, renamed over it, and the
/// directory fsynced so the rename survives a power cut. Where the directory is not writable
/// but the file is (Mosquitto writes the file in place, so an install may be set up so), the
/// file is rewritten in place, with a warning.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".new");
    let tmp = PathBuf::from(tmp_name);
    let opened = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            log::warn!(
                "Warning: dynsec: cannot create {} ({e}); writing {} in place, not atomically.",
                tmp.display(),
                path.display()
            );
            let mut file = OpenOptions::new().write(true).truncate(true).open(path)?;
            file.write_all(bytes)?;
            return file.sync_all();
        }
        Err(e) => return Err(e),
    };
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_saved_file_is_whole_and_private() {
        let dir = std::env::temp_dir().join(format!("midge-saver-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dynsec.json");
        std::fs::write(&path, b"old").unwrap();
        let mut saver = Saver::start().unwrap();
        saver.save(path.clone(), b"{\"a\":1}".to_vec());
        saver.save(path.clone(), b"{\"a\":2}".to_vec());
        assert!(saver.wait_idle(Duration::from_secs(10)));
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":2}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.join("dynsec.json.new").exists());
        saver.close();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
