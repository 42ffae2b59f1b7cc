//! Dropping root privileges (`user` option), as Mosquitto 2.0 does: right after the
//! configuration is read, before the pid file, the log files, the store or any listener is
//! opened. Everything midge creates is then owned by that user, and a bug in packet handling
//! cannot become a root compromise.
//!
//! The price, as with Mosquitto 2.0: the files the configuration names (certificates, password
//! and ACL files, the store's directory, log files) must be readable or writable by that user,
//! and a listener on a port below 1024 needs `CAP_NET_BIND_SERVICE` (e.g. systemd's
//! `AmbientCapabilities=`), since the sockets are opened after the switch.

use std::ffi::CString;

/// The user midge switches to when started as root and `user` is not set, as Mosquitto.
pub const DEFAULT_USER: &str = "mosquitto";

/// The fallback when [`DEFAULT_USER`] does not exist on this machine.
const FALLBACK_USER: &str = "nobody";

/// What the password database says about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The login name (for `initgroups`).
    pub name: String,
    /// User id.
    pub uid: libc::uid_t,
    /// Primary group id.
    pub gid: libc::gid_t,
}

/// Whom a root process runs as: `Ok(None)` keeps root (`user root`); `Ok(Some(account,
/// warning))` switches to `account`, logging `warning` first if there is one. `lookup` reads
/// the password database (a parameter so the choice can be tested without changing it).
/// As Mosquitto: the name `mosquitto` falls back to `nobody` when it does not exist; any other
/// missing user is fatal.
pub fn choose(
    user: &str,
    lookup: impl Fn(&str) -> Option<Account>,
) -> Result<Option<(Account, Option<String>)>, String> {
    if user == "root" {
        return Ok(None);
    }
    if let Some(account) = lookup(user) {
        return Ok(Some((account, None)));
    }
    if user != DEFAULT_USER {
        return Err(format!(
            "Error: Unable to drop privileges to '{user}' because this user does not exist."
        ));
    }
    let warning = format!(
        "Warning: Unable to drop privileges to '{user}' because this user does not exist. \
         Trying '{FALLBACK_USER}' instead."
    );
    match lookup(FALLBACK_USER) {
        Some(account) => Ok(Some((account, Some(warning)))),
        None => Err(format!(
            "{warning}\nError: Unable to drop privileges to '{FALLBACK_USER}'."
        )),
    }
}

/// Looks `name` up in the password database.
pub fn lookup(name: &str) -> Option<Account> {
    let c_name = CString::new(name).ok()?;
    // SAFETY: getpwnam returns NULL or a pointer into static storage; the ids are copied out
    // at once, and no other thread calls getpwnam this early in start-up.
    unsafe {
        let pw = libc::getpwnam(c_name.as_ptr());
        if pw.is_null() {
            return None;
        }
        Some(Account {
            name: name.to_string(),
            uid: (*pw).pw_uid,
            gid: (*pw).pw_gid,
        })
    }
}

/// If the process runs as root, switches to `user` (its uid, primary group and supplementary
/// groups), chosen by [`choose`]. Does nothing for a process that is not root. Returns the
/// message to print and exit with when the switch is impossible.
pub fn drop_privileges(user: &str) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    if let Some((account, warning)) = choose(user, lookup)? {
        if let Some(warning) = warning {
            log::warn!("{warning}");
        }
        switch_to(&account)?;
    }
    // SAFETY: geteuid and getegid have no preconditions.
    if unsafe { libc::geteuid() == 0 || libc::getegid() == 0 } {
        log::warn!("Warning: midge should not be run as root/administrator.");
    }
    Ok(())
}

/// Groups first, then the user id: once the uid is no longer root, groups cannot change.
fn switch_to(account: &Account) -> Result<(), String> {
    let name = CString::new(account.name.as_str())
        .map_err(|_| "Error: User name contains a NUL byte.".to_string())?;
    let failed = |what: &str| {
        format!(
            "Error setting {what} whilst dropping privileges: {}.",
            std::io::Error::last_os_error()
        )
    };
    // SAFETY: plain system calls with values from the password database.
    unsafe {
        if libc::initgroups(name.as_ptr(), account.gid) != 0 {
            return Err(failed("groups"));
        }
        if libc::setgid(account.gid) != 0 {
            return Err(failed("gid"));
        }
        if libc::setuid(account.uid) != 0 {
            return Err(failed("uid"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A password database that holds only `names` (uid and gid from their position).
    fn db(names: &'static [&'static str]) -> impl Fn(&str) -> Option<Account> {
        move |name| {
            let i = names.iter().position(|n| *n == name)? as u32;
            Some(Account {
                name: name.to_string(),
                uid: 1000 + i,
                gid: 2000 + i,
            })
        }
    }

    #[test]
    fn root_keeps_root() {
        assert_eq!(choose("root", db(&[])), Ok(None));
    }

    #[test]
    fn an_existing_user_is_used_without_warning() {
        let (account, warning) = choose("midge", db(&["nobody", "midge"])).unwrap().unwrap();
        assert_eq!((account.name.as_str(), account.uid), ("midge", 1001));
        assert_eq!(warning, None);
    }

    #[test]
    fn the_default_user_falls_back_to_nobody_with_mosquittos_warning() {
        let (account, warning) = choose(DEFAULT_USER, db(&["nobody"])).unwrap().unwrap();
        assert_eq!(account.name, "nobody");
        assert_eq!(
            warning.as_deref(),
            Some(
                "Warning: Unable to drop privileges to 'mosquitto' because this user does not \
                 exist. Trying 'nobody' instead."
            )
        );
    }

    #[test]
    fn without_nobody_the_fallback_fails() {
        let err = choose(DEFAULT_USER, db(&[])).unwrap_err();
        assert!(
            err.ends_with("Error: Unable to drop privileges to 'nobody'."),
            "{err}"
        );
    }

    #[test]
    fn a_named_user_that_does_not_exist_is_fatal() {
        assert_eq!(
            choose("ghost", db(&["nobody"])),
            Err(
                "Error: Unable to drop privileges to 'ghost' because this user does not exist."
                    .to_string()
            )
        );
    }

    #[test]
    fn lookup_reads_the_password_database() {
        let root = lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(lookup("no-such-user-for-midge-tests"), None);
        assert_eq!(lookup("bad\0name"), None);
    }
}
