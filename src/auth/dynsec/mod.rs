//! Mosquitto's dynamic-security plugin, built in: the same JSON file, the same checks, the same
//! `$CONTROL/dynamic-security/v1` command API.
//!
//! Clients (users) hold roles and belong to groups; groups hold roles; roles hold ACLs. A
//! client's access comes from its own roles, then its groups' roles, each list ordered by
//! priority (highest first); the first ACL whose topic matches decides, and when none does the
//! `defaultACLAccess` for that kind of check applies. Clients without a username get the roles
//! of the anonymous group.
//!
//! Pure logic: [`DynSec::load`] reads the file once, everything else works on bytes in memory.
//! The broker saves [`DynSec::to_json`] after a command that changed something, disconnects the
//! clients a command names, and asks [`DynSec::authenticate`] / [`DynSec::allowed`] at CONNECT,
//! PUBLISH, SUBSCRIBE, UNSUBSCRIBE and delivery.

use std::path::Path;

/// The dynamic-security state: clients, groups, roles and the default access.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct DynSec {}

/// The answer of [`DynSec::authenticate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DynAuth {
    /// The username is known, enabled, the password and any client id binding match.
    Allowed,
    /// The username is known but the client may not connect as it.
    Denied,
    /// No such username (or none given): dynsec has no opinion, as Mosquitto's plugin returns
    /// `MOSQ_ERR_PLUGIN_DEFER`, so the caller asks the next authority (a `password_file`).
    Defer,
}

/// The four kinds of access check dynsec distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DynAccess {
    /// A client publishes to a topic (`publishClientSend`).
    PublishSend,
    /// A message on a topic is delivered to a client (`publishClientReceive`).
    PublishReceive,
    /// A client subscribes to a filter (`subscribeLiteral` / `subscribePattern`).
    Subscribe,
    /// A client unsubscribes from a filter (`unsubscribeLiteral` / `unsubscribePattern`).
    Unsubscribe,
}

/// What one `$CONTROL/dynamic-security/v1` request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ControlOutcome {
    /// The payload to publish on `$CONTROL/dynamic-security/v1/response`.
    pub response: Vec<u8>,
    /// Whether the state changed, so the caller saves the file.
    pub changed: bool,
    /// Clients to disconnect (without their will): those connected with each username, and
    /// `None` for every client connected without a username.
    pub kick: Vec<Option<String>>,
}

impl DynSec {
    /// Reads and parses the file at `path`; errors read "path: reason".
    pub(crate) fn load(path: &Path) -> Result<DynSec, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        DynSec::from_json(&path.display().to_string(), &text)
    }

    /// Parses a file's contents; `source` names it in errors.
    pub(crate) fn from_json(source: &str, text: &[u8]) -> Result<DynSec, String> {
        let _ = (source, text);
        Ok(DynSec {})
    }

    /// The state in the layout of Mosquitto's file, for saving.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        b"{}".to_vec()
    }

    /// Whether a client may connect with these credentials.
    pub(crate) fn authenticate(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
        client_id: &str,
    ) -> DynAuth {
        let _ = (username, password, client_id);
        DynAuth::Defer
    }

    /// Whether the client may do `access` on `topic` (a topic name, or a filter for
    /// subscribe/unsubscribe).
    pub(crate) fn allowed(
        &self,
        username: Option<&str>,
        client_id: &str,
        access: DynAccess,
        topic: &str,
    ) -> bool {
        let _ = (username, client_id, access, topic);
        false
    }

    /// Runs one request published to `$CONTROL/dynamic-security/v1`.
    pub(crate) fn control(&mut self, request: &[u8]) -> ControlOutcome {
        let _ = request;
        ControlOutcome {
            response: br#"{"responses":[]}"#.to_vec(),
            changed: false,
            kick: Vec::new(),
        }
    }
}
