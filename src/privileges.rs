//! Dropping root privileges after the listeners are open (`user` option), as Mosquitto does:
//! a broker started as root to bind port 1883 or read root-owned certificates then runs as an
//! ordinary user, so a bug in packet handling cannot become a root compromise.

use std::ffi::CString;
use std::io;

/// If the process runs as root, switch to `user` (its uid, primary gid and supplementary
/// groups). `root` keeps root. Does nothing for a non-root process.
pub fn drop_to(user: &str) -> io::Result<()> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 || user == "root" {
        return Ok(());
    }
    let name = CString::new(user)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "user name contains NUL"))?;
    // SAFETY: getpwnam returns a pointer into static storage or NULL; we copy the ids out at
    // once and nothing else calls getpwnam meanwhile (the broker is single-threaded).
    let (uid, gid) = unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("Unable to drop privileges to '{user}' because this user does not exist"),
            ));
        }
        ((*pw).pw_uid, (*pw).pw_gid)
    };
    // Order matters: groups first, then the user id (after setuid we could not change groups).
    // SAFETY: plain system calls with values from getpwnam.
    unsafe {
        if libc::setgid(gid) != 0 || libc::initgroups(name.as_ptr(), gid) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setuid(uid) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    log::info!(target: "notice", "Dropped privileges to user {user}.");
    Ok(())
}
