//! Dynamic security in the broker: Mosquitto's dynamic security plugin, built in.
//!
//! `crate::auth::dynsec` holds the clients, groups and roles and answers the questions; this
//! module asks them at the right places and carries out what a `$CONTROL` command decides:
//!
//! - CONNECT (`connect.rs`): dynamic security is asked first, then the password file, as
//!   Mosquitto 2.0 asks its plugins before its own files (see [`Broker::authenticate`]);
//! - access (`inbound.rs` publish, `route.rs` delivery, `retain.rs` retained replay,
//!   `subscribe.rs` subscribe and unsubscribe): [`verdict`];
//! - a PUBLISH to `$CONTROL/dynamic-security/v1` that passed the publish check
//!   (`control.rs`): [`Broker::serve_dynsec`] runs it, publishes the response to
//!   `$CONTROL/dynamic-security/v1/response` as the broker (QoS 0, the read check applies to
//!   each subscriber, as Mosquitto's plugin publishes it), disconnects the clients the command
//!   affects (without their will, as Mosquitto kicks them) and queues the file to be saved;
//! - a file changed on disk (SIGHUP, midge's own addition): [`Broker::handle_dynsec_reloaded`].
//!
//! The state is shared by the listeners that use one file, and lives in their
//! [`crate::auth::Security`]; it is loaded at start ([`super::Settings::load_dynsec`]) and kept
//! across reloads of the configuration ([`super::Settings::keep_dynsec`]).

use super::session::{Credential, Session};
use super::{Broker, CloseReason, ConnId, SessionId, Settings};
use crate::auth::dynsec::{DynAccess, DynSec};
use crate::auth::{DynsecFile, Security, SharedDynsec};
use crate::codec::{reason, Publish, QoS};
use crate::config::{Config, DynsecConfig};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

/// The topic of dynamic security's command API.
pub(super) const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
/// Where its responses go.
const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";

/// Dynamic security's answer for `access` to `topic`, combined with the `acl_file` as
/// Mosquitto 2.0 combines a plugin with it (security.c `mosquitto_acl_check`: the plugin
/// first; when it defers, the ACL file; when every one defers, denied); `None` when dynamic
/// security is off, and the ACL file alone decides as before.
///
/// The plugin defers for a username it does not know (a `password_file` user), and where no
/// rule matches and the default access denies. Mosquitto 2.0's ACL file has no subscribe or
/// unsubscribe rules, so it lets both through.
pub(super) fn verdict(
    security: &Security,
    username: Option<&str>,
    client_id: &str,
    access: DynAccess,
    topic: &str,
) -> Option<bool> {
    let dynsec = security.dynsec.as_ref()?;
    // Never re-entered (one thread, no check inside a command); should it be, deny.
    let Ok(file) = dynsec.try_borrow() else {
        return Some(false);
    };
    if let Some(decided) = file.state.access(username, access, topic) {
        return Some(decided);
    }
    Some(security.acl.as_ref().is_some_and(|acl| match access {
        DynAccess::PublishSend => acl.can_publish(username, client_id, topic),
        DynAccess::PublishReceive => acl.can_read(username, client_id, topic),
        DynAccess::Subscribe | DynAccess::Unsubscribe => true,
    }))
}

/// [`verdict`] for a client's session (bridges' own sessions are not asked).
pub(super) fn session_verdict(
    security: &Security,
    s: &Session,
    access: DynAccess,
    topic: &str,
) -> Option<bool> {
    verdict(security, s.username(), &s.client_id, access, topic)
}

impl Settings {
    /// Loads the JSON file of each dynamic security `plugin` line of `c` (once per file: the
    /// listeners that name one file share its state). At start only: a reload keeps the
    /// running state ([`Settings::keep_dynsec`]). A missing, unreadable or invalid file is an
    /// error naming the file and the reason.
    pub fn load_dynsec(&mut self, c: &Config) -> Result<(), String> {
        let mut files: Vec<SharedDynsec> = Vec::new();
        let mut open = |d: &DynsecConfig| -> Result<SharedDynsec, String> {
            if let Some(f) = files.iter().find(|f| f.borrow().path == d.config_file) {
                return Ok(f.clone());
            }
            let path = &d.config_file;
            let known = std::fs::read(path).map_err(|e| {
                format!(
                    "Unable to open dynamic security config file {}: {e}",
                    path.display()
                )
            })?;
            let state = DynSec::from_json(&path.display().to_string(), &known)
                .map_err(|e| format!("Invalid dynamic security config file: {e}"))?;
            for w in state.warnings() {
                log::warn!("Warning: dynsec: {w}");
            }
            let file = Rc::new(RefCell::new(DynsecFile {
                path: path.clone(),
                state,
                known,
            }));
            files.push(file.clone());
            Ok(file)
        };
        if let Some(d) = &c.dynsec {
            let dynsec = open(d)?;
            security_mut(&mut self.security)?.dynsec = Some(dynsec);
        }
        if c.per_listener_settings {
            for (l, policy) in c.listeners.iter().zip(&mut self.per_listener) {
                if let Some(d) = &l.auth.dynsec {
                    let dynsec = open(d)?;
                    security_mut(&mut policy.security)?.dynsec = Some(dynsec);
                }
            }
        }
        Ok(())
    }

    /// Gives a reloaded configuration the dynamic security `old` runs: its `plugin` lines
    /// are read at start only, as Mosquitto reads them, and its state lives on.
    pub(super) fn keep_dynsec(&mut self, old: &Settings) {
        if let Ok(security) = security_mut(&mut self.security) {
            security.dynsec.clone_from(&old.security.dynsec);
        }
        for (i, policy) in self.per_listener.iter_mut().enumerate() {
            let kept = old
                .per_listener
                .get(i)
                .and_then(|p| p.security.dynsec.clone());
            if let Ok(security) = security_mut(&mut policy.security) {
                security.dynsec = kept;
            }
        }
    }

    /// Every dynamic security state in force, once each.
    pub(crate) fn dynsec_files(&self) -> Vec<SharedDynsec> {
        let mut files: Vec<SharedDynsec> = Vec::new();
        let all =
            std::iter::once(&self.security).chain(self.per_listener.iter().map(|p| &p.security));
        for d in all.filter_map(|s| s.dynsec.as_ref()) {
            if !files.iter().any(|f| Rc::ptr_eq(f, d)) {
                files.push(d.clone());
            }
        }
        files
    }
}

/// The security of freshly loaded settings, to fill in (never shared yet).
fn security_mut(security: &mut Rc<Security>) -> Result<&mut Security, String> {
    Rc::get_mut(security).ok_or_else(|| "the security settings are already shared".to_string())
}

impl Broker {
    /// A request to `$CONTROL/dynamic-security/v1` from connection `id` (session `sid`) that
    /// passed the publish access check. Returns the reason code to acknowledge it with.
    pub(super) fn serve_dynsec(
        &mut self,
        id: ConnId,
        sid: SessionId,
        p: &Publish<'_>,
        now: Instant,
    ) -> u8 {
        let Some(s) = self.session(sid) else {
            return reason::UNSPECIFIED_ERROR;
        };
        let Some(dynsec) = self.settings.security_for(s.listener).dynsec.clone() else {
            // No dynamic security on this client's listener: nothing serves the topic.
            return reason::SUCCESS;
        };
        let admin = format!("{}/{}", s.client_id, s.username().unwrap_or(""));
        let outcome = match dynsec.try_borrow_mut() {
            Ok(mut file) => file.state.control(p.payload),
            Err(_) => return reason::UNSPECIFIED_ERROR,
        };
        log_changes(&admin, p.payload, &outcome.response);
        if outcome.changed {
            self.save_dynsec(&dynsec);
        }
        log::debug!(
            "dynsec: response to {} ({} bytes)",
            self.conn_name(id),
            outcome.response.len()
        );
        self.publish_internal(
            RESPONSE_TOPIC,
            &outcome.response,
            QoS::AtMostOnce,
            false,
            now,
        );
        // After the response, so a client that changed itself still gets its answer (a
        // closing connection's output is written before it closes).
        for username in &outcome.kick {
            self.kick_dynsec_clients(&dynsec, username.as_deref(), now);
        }
        reason::SUCCESS
    }

    /// Queues the state of `dynsec` to be written to its file, off the loop's thread
    /// ([`Broker::poll_dynsec_save`]).
    fn save_dynsec(&mut self, dynsec: &SharedDynsec) {
        let Ok(mut file) = dynsec.try_borrow_mut() else {
            return;
        };
        let json = file.state.to_json();
        file.known.clone_from(&json);
        self.dynsec_saves.push((file.path.clone(), json));
    }

    /// The next dynamic security file to write (the whole file, in Mosquitto's layout), oldest
    /// first: the server writes it atomically on a helper thread.
    pub(crate) fn poll_dynsec_save(&mut self) -> Option<(PathBuf, Vec<u8>)> {
        (!self.dynsec_saves.is_empty()).then(|| self.dynsec_saves.remove(0))
    }

    /// Disconnects, without their will, the connected clients of the listeners that use
    /// `dynsec` whose username is `username` (`None`: every client without one), as
    /// Mosquitto's plugin kicks the clients a change affects.
    fn kick_dynsec_clients(&mut self, dynsec: &SharedDynsec, username: Option<&str>, now: Instant) {
        let n = self.revoke_where(
            CloseReason::Kicked,
            |broker, conn, s| uses(broker, conn, dynsec) && s.username() == username,
            now,
        );
        if n > 0 {
            log::info!(
                target: "notice",
                "dynsec: disconnected {n} client(s) of {}.",
                username.map_or("anonymous users".to_string(), |u| format!("user {u}"))
            );
        }
    }

    /// Every dynamic security state in force, once each (for SIGHUP to re-read the files).
    pub(crate) fn dynsec_files(&self) -> Vec<SharedDynsec> {
        self.settings.dynsec_files()
    }

    /// SIGHUP found `dynsec`'s file changed on disk (by another tool, or by hand) and read it
    /// as `state`: it replaces the running state, and every client dynamic security admitted
    /// under the old one is disconnected (without its will) to log in under the new one.
    /// Anonymous and password file clients stay: every later access check asks the new rules.
    pub(crate) fn handle_dynsec_reloaded(
        &mut self,
        dynsec: &SharedDynsec,
        state: DynSec,
        known: Vec<u8>,
        now: Instant,
    ) -> usize {
        match dynsec.try_borrow_mut() {
            Ok(mut file) => {
                file.state = state;
                file.known = known;
                log::info!(target: "notice", "dynsec: reloaded {}.", file.path.display());
            }
            Err(_) => return 0,
        }
        self.revoke_where(
            CloseReason::Kicked,
            |broker, conn, s| {
                uses(broker, conn, dynsec) && matches!(s.login(), Some(Credential::Dynsec))
            },
            now,
        )
    }
}

/// Whether `conn` came in on a listener whose dynamic security is `dynsec`.
fn uses(broker: &Broker, conn: &super::conn::Conn, dynsec: &SharedDynsec) -> bool {
    broker
        .settings
        .security_for(conn.listener)
        .dynsec
        .as_ref()
        .is_some_and(|d| Rc::ptr_eq(d, dynsec))
}

/// One notice line per command that changed something, as Mosquitto's plugin logs its
/// changes: who asked, the command, and the names it acted on (never a password).
fn log_changes(admin: &str, request: &[u8], response: &[u8]) {
    use serde_json::Value;
    let (Ok(request), Ok(response)) = (
        serde_json::from_slice::<Value>(request),
        serde_json::from_slice::<Value>(response),
    ) else {
        return;
    };
    let (Some(commands), Some(responses)) = (
        request.get("commands").and_then(Value::as_array),
        response.get("responses").and_then(Value::as_array),
    ) else {
        return;
    };
    for (command, response) in commands.iter().zip(responses) {
        let Some(name) = command.get("command").and_then(Value::as_str) else {
            continue;
        };
        let read_only = name.starts_with("get") || name.starts_with("list");
        if read_only || response.get("error").is_some() {
            continue;
        }
        let mut line = format!("dynsec: {admin} | {name}");
        for key in [
            "username",
            "clientid",
            "groupname",
            "rolename",
            "acltype",
            "topic",
            "priority",
            "allow",
        ] {
            if let Some(v) = command.get(key) {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                line.push_str(&format!(" | {key}={v}"));
            }
        }
        if command.get("password").is_some() {
            // As Mosquitto's plugin: that there is one, never what it is.
            line.push_str(" | password=*****");
        }
        log::info!(target: "notice", "{line}");
    }
}
