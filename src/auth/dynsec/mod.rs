//! Mosquitto's dynamic-security plugin, built in: the same JSON file, the same checks, the same
//! `$CONTROL/dynamic-security/v1` command API.
//!
//! Clients (users) hold roles and belong to groups; groups hold roles; roles hold ACLs. A
//! client's access comes from its own roles, then its groups' roles, each list ordered by
//! priority (highest first); the first ACL whose topic matches decides, and when none does the
//! `defaultACLAccess` for that kind of check applies. Clients without a username get the roles
//! of the anonymous group.
//!
//! Pure logic: [`DynSec::load`] reads the file once, everything else works on bytes in memory
//! (a new password's salt comes from `/dev/urandom`, as for `midge_passwd`).
//! The broker saves [`DynSec::to_json`] after a command that changed something, disconnects the
//! clients a command names, and asks [`DynSec::authenticate`] / [`DynSec::allowed`] at CONNECT,
//! PUBLISH, SUBSCRIBE, UNSUBSCRIBE and delivery.

use std::path::Path;

mod check;
mod control;
mod json;
mod model;
#[cfg(test)]
mod tests;

use check::Index;
use model::Model;

/// The dynamic-security state: clients, groups, roles and the default access, with the index
/// the checks use (rebuilt after every change).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct DynSec {
    model: Model,
    index: Index,
    warnings: Vec<String>,
}

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
    /// Reads and parses the file at `path`; errors read "path: reason". An empty file is an
    /// empty configuration, as for the plugin.
    pub(crate) fn load(path: &Path) -> Result<DynSec, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        DynSec::from_json(&path.display().to_string(), &text)
    }

    /// Parses a file's contents; `source` names it in errors and warnings. Invalid JSON or a
    /// wrong top-level shape is an error (the plugin would run with nothing loaded: midge does
    /// not start with security it could not read); entries the plugin skips are skipped with a
    /// warning, see [`DynSec::warnings`].
    pub(crate) fn from_json(source: &str, text: &[u8]) -> Result<DynSec, String> {
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(DynSec::default());
        }
        let tree: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| format!("{source}: not valid JSON: {e}"))?;
        let (model, warnings) =
            Model::from_value(&tree).map_err(|reason| format!("{source}: {reason}"))?;
        Ok(DynSec {
            index: Index::build(&model),
            model,
            warnings: warnings
                .into_iter()
                .map(|w| format!("{source}: {w}"))
                .collect(),
        })
    }

    /// What loading skipped, one line each ("file: client \"x\": … : skipped").
    pub(crate) fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The state in the layout of Mosquitto's file (tab-indented, as cJSON prints), for saving.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
        // Serialising a `Value` into a `Vec` cannot fail.
        let _ = serde::Serialize::serialize(&self.model.to_value(), &mut ser);
        out.push(b'\n');
        out
    }

    /// Whether a client may connect with these credentials, with the plugin's answers: no
    /// username or password, an unknown username, or a known one without a password all defer.
    pub(crate) fn authenticate(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
        client_id: &str,
    ) -> DynAuth {
        check::authenticate(&self.model, username, password, client_id)
    }

    /// The plugin's ACL decision: `Some(allowed)`, or `None` where it defers (a username dynsec
    /// does not know; no ACL matched and the default access is deny). With nothing else to
    /// ask, a deferral is a denial, see [`DynSec::allowed`].
    pub(crate) fn access(
        &self,
        username: Option<&str>,
        access: DynAccess,
        topic: &str,
    ) -> Option<bool> {
        check::access(&self.model, &self.index, username, access, topic)
    }

    /// Whether the client may do `access` on `topic` (a topic name, or a filter for
    /// subscribe/unsubscribe). Mosquitto 2.0's dynsec ACLs have no `%c` patterns, so the
    /// answer does not depend on the client id.
    pub(crate) fn allowed(
        &self,
        username: Option<&str>,
        _client_id: &str,
        access: DynAccess,
        topic: &str,
    ) -> bool {
        self.access(username, access, topic) == Some(true)
    }

    /// Runs one request published to `$CONTROL/dynamic-security/v1`.
    pub(crate) fn control(&mut self, request: &[u8]) -> ControlOutcome {
        let before = self.model.clone();
        let reply = control::run(&mut self.model, request);
        let changed = self.model != before;
        if changed {
            self.index = Index::build(&self.model);
        }
        let mut responses = serde_json::Map::new();
        responses.insert("responses".into(), reply.responses.into());
        ControlOutcome {
            response: serde_json::Value::Object(responses)
                .to_string()
                .into_bytes(),
            changed,
            kick: reply.kick,
        }
    }
}
