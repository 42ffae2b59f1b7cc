//! Authentication and authorisation with Mosquitto's file formats, so users migrating from
//! Mosquitto keep their files: [`passwd`] reads and writes `password_file`s as
//! `mosquitto_passwd` makes them, `acl` loads an `acl_file` and answers "may this client
//! publish / receive / subscribe here?".
//!
//! [`CertIdentity`] carries what a TLS handshake proved about a client to CONNECT.
//!
//! Pure logic over file contents: nothing here opens sockets, logs, or knows about packets or
//! listeners. The broker loads the files (at start and on SIGHUP), logs the warnings, and asks
//! these types during CONNECT, PUBLISH, SUBSCRIBE and delivery.

pub(crate) mod acl;
pub(crate) mod base64;
// Until the broker calls it, only its tests do.
#[allow(dead_code)]
pub(crate) mod dynsec;
pub mod passwd;

pub(crate) use acl::Acl;
pub use passwd::PasswordFile;

use std::path::Path;

/// What a TLS listener that takes usernames from certificates learnt about a client: the
/// transport finds it during the handshake, the broker authenticates with it at CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertIdentity {
    /// The username the certificate gives (its CN, or its subject).
    Username(Box<str>),
    /// The client presented no certificate (or one without a CN): it cannot connect, as in
    /// Mosquitto, whatever CONNECT says.
    Missing,
}

/// The password file and ACL in force, as loaded from a configuration.
#[derive(Debug, Default, PartialEq)]
pub struct Security {
    /// Users and their password hashes; `None` without `password_file`.
    pub(crate) passwords: Option<PasswordFile>,
    /// Access rules; `None` without `acl_file` (everything allowed).
    pub(crate) acl: Option<Acl>,
    /// Dynamic security, consulted before the two files (as Mosquitto asks its plugins
    /// first); `None` without the dynamic security `plugin`.
    pub(crate) dynsec: Option<SharedDynsec>,
}

/// The dynamic security of one JSON file, shared by the listeners that name it. It changes at
/// runtime (`$CONTROL` commands, a file changed on disk), hence the `RefCell`; only the loop's
/// thread uses it, and never re-entrantly.
pub(crate) type SharedDynsec = std::rc::Rc<std::cell::RefCell<DynsecFile>>;

/// A [`dynsec::DynSec`] with the file it lives in.
#[derive(Debug, PartialEq)]
pub(crate) struct DynsecFile {
    /// `plugin_opt_config_file`.
    pub(crate) path: std::path::PathBuf,
    pub(crate) state: dynsec::DynSec,
    /// The file's contents as last read or written by midge: a SIGHUP re-reads the file only
    /// when it differs.
    pub(crate) known: Vec<u8>,
}

impl Security {
    /// Loads a password file and an ACL file, either optional (the broker-wide ones, or one
    /// listener's with `per_listener_settings`). Warnings (a malformed password line, an odd
    /// ACL pattern) come back to be logged; an unreadable file or an invalid ACL line is an
    /// error, as in Mosquitto: better not to start than to run with the wrong rules.
    pub(crate) fn load(
        password_file: Option<&Path>,
        acl_file: Option<&Path>,
    ) -> Result<(Security, Vec<String>), String> {
        let mut warnings = Vec::new();
        let passwords = match password_file {
            Some(path) => {
                let (file, w) = PasswordFile::load(path)
                    .map_err(|e| format!("Unable to open password file {}: {e}", path.display()))?;
                warnings.extend(w);
                Some(file)
            }
            None => None,
        };
        let acl = match acl_file {
            Some(path) => {
                let acl = Acl::load(path)?;
                warnings.extend(acl.warnings().iter().cloned());
                Some(acl)
            }
            None => None,
        };
        Ok((
            Security {
                passwords,
                acl,
                dynsec: None,
            },
            warnings,
        ))
    }

    /// A line for the log describing what changed from `old` to `self` (for SIGHUP).
    pub(crate) fn describe_change(&self, old: &Security) -> Vec<String> {
        let mut lines = Vec::new();
        match (&old.passwords, &self.passwords) {
            (Some(a), Some(b)) if a != b => {
                let (au, bu) = (a.users(), b.users());
                let added: Vec<&str> = bu.iter().filter(|u| !au.contains(u)).copied().collect();
                let removed: Vec<&str> = au.iter().filter(|u| !bu.contains(u)).copied().collect();
                lines.push(format!(
                    "Password file reloaded: {} users (added: {}; removed: {}; others may have new passwords).",
                    bu.len(),
                    if added.is_empty() { "none".into() } else { added.join(", ") },
                    if removed.is_empty() { "none".into() } else { removed.join(", ") },
                ));
            }
            (None, Some(b)) => {
                lines.push(format!("Password file loaded: {} users.", b.users().len()))
            }
            (Some(_), None) => lines.push("Password file removed from the configuration.".into()),
            _ => {}
        }
        match (&old.acl, &self.acl) {
            (Some(a), Some(b)) if a != b => lines.push("ACL file reloaded: rules changed.".into()),
            (None, Some(_)) => lines.push("ACL file loaded.".into()),
            (Some(_), None) => lines.push("ACL file removed from the configuration.".into()),
            _ => {}
        }
        lines
    }
}
