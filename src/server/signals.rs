//! Signals: the self-pipe the handlers write to, and what the loop does with each signal once
//! it reads it (SIGINT/SIGTERM stop, SIGUSR1 saves the store now, SIGHUP reloads the
//! configuration; SIGPIPE is ignored so a dead peer is an error, not a crash).
//!
//! A handler only writes the signal's number to the pipe, all it may safely do; everything
//! else runs on the loop's thread, between two events. A reload is all or nothing: every file
//! it needs is read before anything changes. This module does not decide what a reload
//! changes: the broker's [`Settings`] and the listeners' TLS ([`super::listeners`]) do.

use super::listeners::{apply_tls, reload_tls};
use super::{Server, Tok};
use crate::broker::Settings;
use crate::logging::Staged;
use crate::transport::tls::TlsListener;
use mio::net::UnixStream;
use mio::{Interest, Poll};
use std::io::{self, ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

/// Write end of the signal self-pipe, for the signal handler.
static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is a local byte.
        unsafe {
            libc::write(fd, (&b as *const u8).cast(), 1);
        }
    }
}

/// Installs the handlers with sigaction and SA_RESTART, so a signal arriving while the store
/// thread or a log write is in a system call does not make that call fail with EINTR.
fn install_signal_handlers(write_fd: i32) {
    SIGNAL_FD.store(write_fd, Ordering::Relaxed);
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    let set = |sig: libc::c_int, handler: libc::sighandler_t| {
        // SAFETY: `action` is fully initialised (zeroed, then the handler, an empty mask and
        // flags); the handler only calls write(2), which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    };
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        set(sig, handler);
    }
    set(libc::SIGPIPE, libc::SIG_IGN);
}

/// The self-pipe: the handlers write signal numbers into one end, the loop polls the other.
pub(super) struct SelfPipe {
    rx: UnixStream,
    /// Kept open for the handlers, which write to its descriptor.
    _tx: UnixStream,
}

impl SelfPipe {
    /// Opens the pipe, registers its read end with `poll` and installs the handlers.
    pub(super) fn install(poll: &Poll) -> io::Result<SelfPipe> {
        let (mut rx, tx) = UnixStream::pair()?;
        poll.registry()
            .register(&mut rx, Tok::Signal.into(), Interest::READABLE)?;
        install_signal_handlers(tx.as_raw_fd());
        Ok(SelfPipe { rx, _tx: tx })
    }
}

/// Reloads the configuration on SIGHUP: returns the new config with its log destinations
/// opened (not yet in use), or a message saying why not.
pub type Reloader = Box<dyn FnMut() -> Result<(crate::config::Config, Staged), String>>;

/// A reloaded configuration, loaded in full and waiting to be put in force.
struct StagedReload {
    logs: Staged,
    /// New certificates and keys, by listener socket index.
    tls: Vec<(usize, TlsListener)>,
    settings: Settings,
}

impl Server {
    /// Acts on every signal waiting in the self-pipe.
    pub(super) fn handle_signals(&mut self, now: Instant) {
        let mut buf = [0u8; 64];
        loop {
            match self.signals.rx.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    for &sig in &buf[..n] {
                        self.on_signal_notifying(i32::from(sig), now);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    /// `on_signal`, with a reload bracketed by systemd notifications (`notify`).
    fn on_signal_notifying(&mut self, sig: i32, now: Instant) {
        let reload = sig == libc::SIGHUP && self.reload.is_some();
        if reload {
            crate::notify::reloading();
        }
        self.on_signal(sig, now);
        if reload {
            crate::notify::ready();
        }
    }

    fn on_signal(&mut self, sig: i32, now: Instant) {
        match sig {
            libc::SIGINT | libc::SIGTERM => {
                log::info!(target: "notice", "Signal received, shutting down.");
                crate::notify::stopping();
                self.running = false;
            }
            libc::SIGUSR1 => {
                if let Some(store) = &self.store {
                    log::info!(target: "notice", "Saving the store now (SIGUSR1).");
                    store.sync_now();
                }
            }
            libc::SIGHUP => self.reload_config(now),
            _ => {}
        }
    }

    /// SIGHUP: reads the configuration again and puts all of it in force, or none of it.
    /// Everything that can fail (the config file, log files, TLS certificates and keys, the
    /// password and ACL files) is loaded first; only then does anything change. A reload that
    /// fails logs why and keeps the running configuration whole.
    fn reload_config(&mut self, now: Instant) {
        if self.reload.is_none() {
            return;
        }
        log::info!(target: "notice", "Reloading config.");
        match self.load_reload() {
            Ok(staged) => self.apply_reload(staged, now),
            Err(e) => {
                // One log line per line of the message (Mosquitto's two-line form).
                for line in e.lines() {
                    log::error!("{line}");
                }
                log::error!("Error: Unable to reload config; the running one is kept.");
            }
        }
        self.reload_dynsec(now);
    }

    /// SIGHUP, for dynamic security (midge's own addition; Mosquitto reads the file at start
    /// only): every change made in memory is written first, then each file that differs from
    /// what midge last read or wrote is read and put in force. A file that cannot be read or
    /// is not valid is logged, and the running state kept.
    fn reload_dynsec(&mut self, now: Instant) {
        self.save_dynsec();
        if let Some(saver) = &self.saver {
            if !saver.wait_idle(std::time::Duration::from_secs(10)) {
                log::error!("Error: dynsec: saving takes too long; the files are not re-read.");
                return;
            }
        }
        for file in self.broker.dynsec_files() {
            let (path, same) = {
                let f = file.borrow();
                let text = std::fs::read(&f.path);
                (f.path.clone(), text.map(|t| (t == f.known, t)))
            };
            let state = match same {
                Ok((true, _)) => continue,
                Ok((false, text)) => {
                    crate::auth::dynsec::DynSec::from_json(&path.display().to_string(), &text)
                        .map(|state| (state, text))
                }
                Err(e) => Err(format!("{}: {e}", path.display())),
            };
            match state {
                Ok((state, text)) => {
                    let n = self.broker.handle_dynsec_reloaded(&file, state, text, now);
                    log::info!(target: "notice", "dynsec: {n} client(s) to log in again.");
                }
                Err(e) => {
                    log::error!("Error: dynsec: unable to reload {e}; the running state is kept.")
                }
            }
        }
    }

    /// The loading half of [`Server::reload_config`]: changes nothing.
    fn load_reload(&mut self) -> Result<StagedReload, String> {
        let reload = self
            .reload
            .as_mut()
            .ok_or_else(|| "nothing to reload".to_string())?;
        let (config, logs) = reload()?;
        let tls = reload_tls(&self.listeners, &config)?;
        let settings = Settings::load(&config).map_err(|e| format!("Error: {e}."))?;
        Ok(StagedReload {
            logs,
            tls,
            settings,
        })
    }

    /// The applying half of [`Server::reload_config`]: cannot fail. Clients the new password
    /// file or `allow_anonymous` no longer admit are disconnected by the broker.
    fn apply_reload(&mut self, staged: StagedReload, now: Instant) {
        staged.logs.apply();
        apply_tls(&mut self.listeners, staged.tls);
        self.ws_message_limit = super::listeners::ws_message_limit(staged.settings.max_packet_size);
        self.broker.handle_reload(staged.settings, now);
    }
}
