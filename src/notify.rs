//! Readiness notification for systemd (`Type=notify`), the protocol of sd_notify(3): when
//! `NOTIFY_SOCKET` names a Unix datagram socket, midge sends `READY=1` once its listeners are
//! open, `RELOADING=1` (with `MONOTONIC_USEC`) and then `READY=1` around a SIGHUP reload, and
//! `STOPPING=1` when it starts shutting down. Debian's `mosquitto.service` is `Type=notify`;
//! without `READY=1` systemd would kill the broker at the start timeout.
//!
//! The socket is connected in [`init`], before privileges are dropped: the user midge then
//! runs as may not be allowed to open the socket's path itself.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;

/// The connected notification socket; unset when `NOTIFY_SOCKET` is not.
static SOCKET: OnceLock<UnixDatagram> = OnceLock::new();

/// Connects to the socket `NOTIFY_SOCKET` names, if set. Like sd_notify(3), a socket that
/// cannot be reached does not stop midge; it is reported, since under `Type=notify` systemd
/// will then stop the service at its start timeout.
pub fn init() {
    let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let name = name.to_string_lossy().into_owned();
    match connect(&name) {
        Ok(socket) => {
            let _ = SOCKET.set(socket);
        }
        Err(e) => log::warn!("Warning: Unable to reach NOTIFY_SOCKET {name}: {e}."),
    }
}

/// A datagram socket connected to `name`: a path, or `@name` for an abstract socket.
fn connect(name: &str) -> io::Result<UnixDatagram> {
    let address = match name.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes())?,
        None => SocketAddr::from_pathname(name)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.connect_addr(&address)?;
    Ok(socket)
}

/// Sends one notification; a lost one is only logged (the broker works on regardless).
fn send(state: &str) {
    if let Some(socket) = SOCKET.get() {
        if let Err(e) = socket.send(state.as_bytes()) {
            log::warn!("Warning: Unable to notify systemd ({state}): {e}.");
        }
    }
}

/// The listeners are open: start-up is complete (or a reload is).
pub fn ready() {
    send("READY=1");
}

/// A SIGHUP reload begins. systemd wants the time the reload started on the monotonic clock
/// to tell this reload from an earlier one.
pub fn reloading() {
    send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

/// Shutdown begins.
pub fn stopping() {
    send("STOPPING=1");
}

/// CLOCK_MONOTONIC in microseconds.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the local struct; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let micros = u64::try_from(now.tv_nsec / 1000).unwrap_or(0);
    secs * 1_000_000 + micros
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_abstract_sockets_receive_datagrams() {
        let dir = std::env::temp_dir().join(format!("midge-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        connect(path.to_str().unwrap())
            .unwrap()
            .send(b"READY=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();

        let name = format!("midge-notify-test-{}", std::process::id());
        let receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        connect(&format!("@{name}"))
            .unwrap()
            .send(b"STOPPING=1")
            .unwrap();
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error() {
        assert!(connect("/nonexistent/midge/notify.sock").is_err());
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_usec() >= a + 2000);
    }
}
