//! The dynamic-security state and its JSON file, in the layout Mosquitto's plugin reads and
//! writes: `defaultACLAccess`, `clients`, `groups`, `anonymousGroup`, `roles`.
//!
//! Loading follows the plugin's tolerance: an entry without a name, or a client whose password
//! fields do not decode, is skipped (with a warning here, silently there); references to roles,
//! groups or clients that do not exist are dropped. Keys are found case-insensitively, as
//! cJSON's lookup does, so `mosquitto_ctrl dynsec init`'s `"textName"` is a text name.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::json::{get, get_bool, get_int, get_str};
use crate::auth::base64;
use crate::auth::passwd::{PasswordHash, HASH_LEN};

/// The six ACL types, in the order Mosquitto writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AclType {
    PublishClientSend,
    PublishClientReceive,
    SubscribeLiteral,
    SubscribePattern,
    UnsubscribeLiteral,
    UnsubscribePattern,
}

impl AclType {
    /// Every type, in file order.
    pub(super) const ALL: [AclType; 6] = [
        AclType::PublishClientSend,
        AclType::PublishClientReceive,
        AclType::SubscribeLiteral,
        AclType::SubscribePattern,
        AclType::UnsubscribeLiteral,
        AclType::UnsubscribePattern,
    ];

    /// The name in JSON (`acltype`).
    pub(super) fn name(self) -> &'static str {
        match self {
            AclType::PublishClientSend => "publishClientSend",
            AclType::PublishClientReceive => "publishClientReceive",
            AclType::SubscribeLiteral => "subscribeLiteral",
            AclType::SubscribePattern => "subscribePattern",
            AclType::UnsubscribeLiteral => "unsubscribeLiteral",
            AclType::UnsubscribePattern => "unsubscribePattern",
        }
    }

    /// Parses an `acltype`, ignoring case as the plugin does.
    pub(super) fn parse(name: &str) -> Option<AclType> {
        AclType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Position in [`Role::acls`].
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// One ACL of a role: a topic (filter), its priority within the role's list, allow or deny.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Acl {
    pub(super) topic: String,
    pub(super) priority: i32,
    pub(super) allow: bool,
}

/// A reference from a client or group to a role or group, with its priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Member {
    pub(super) name: String,
    pub(super) priority: i32,
}

/// A dynsec client: a username that may log in, with its roles and groups.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Client {
    pub(super) clientid: Option<String>,
    pub(super) textname: Option<String>,
    pub(super) textdescription: Option<String>,
    /// `None`: no usable password, so authentication defers to the next authority.
    pub(super) password: Option<PasswordHash>,
    pub(super) disabled: bool,
    /// Highest priority first (then by name), as the plugin keeps its lists.
    pub(super) roles: Vec<Member>,
    /// Highest priority first (then by name).
    pub(super) groups: Vec<Member>,
}

/// A group: roles shared by its clients (membership is kept on the clients).
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Group {
    pub(super) textname: Option<String>,
    pub(super) textdescription: Option<String>,
    pub(super) roles: Vec<Member>,
}

/// A role: one ACL list per [`AclType`], each highest priority first (equal priorities in the
/// order they were added).
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Role {
    pub(super) textname: Option<String>,
    pub(super) textdescription: Option<String>,
    pub(super) acls: [Vec<Acl>; 6],
}

/// What applies when no ACL matches, per kind of check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct DefaultAccess {
    pub(super) publish_client_send: bool,
    pub(super) publish_client_receive: bool,
    pub(super) subscribe: bool,
    pub(super) unsubscribe: bool,
}

/// The names `defaultACLAccess` uses, paired with the field they set.
pub(super) const DEFAULT_ACCESS_NAMES: [&str; 4] = [
    "publishClientSend",
    "publishClientReceive",
    "subscribe",
    "unsubscribe",
];

impl DefaultAccess {
    /// The value for one of [`DEFAULT_ACCESS_NAMES`] (by position).
    pub(super) fn get(&self, which: usize) -> bool {
        [
            self.publish_client_send,
            self.publish_client_receive,
            self.subscribe,
            self.unsubscribe,
        ][which]
    }

    /// Sets one of [`DEFAULT_ACCESS_NAMES`] (by position).
    pub(super) fn set(&mut self, which: usize, allow: bool) {
        match which {
            0 => self.publish_client_send = allow,
            1 => self.publish_client_receive = allow,
            2 => self.subscribe = allow,
            _ => self.unsubscribe = allow,
        }
    }
}

/// Clients, groups and roles by name (sorted, as the plugin keeps and writes them), the default
/// access, and the anonymous group.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Model {
    pub(super) clients: BTreeMap<String, Client>,
    pub(super) groups: BTreeMap<String, Group>,
    pub(super) roles: BTreeMap<String, Role>,
    pub(super) default_access: DefaultAccess,
    pub(super) anonymous_group: Option<String>,
}

/// Inserts into a list kept as the plugin orders role and group lists: highest priority first,
/// equal priorities by name. Returns false if `name` is already in the list.
pub(super) fn insert_member(list: &mut Vec<Member>, name: &str, priority: i32) -> bool {
    if list.iter().any(|m| m.name == name) {
        return false;
    }
    let at = list
        .iter()
        .position(|m| m.priority < priority || (m.priority == priority && m.name.as_str() > name))
        .unwrap_or(list.len());
    list.insert(
        at,
        Member {
            name: name.to_owned(),
            priority,
        },
    );
    true
}

/// Inserts an ACL after every ACL of higher or equal priority (the plugin's in-order insert).
pub(super) fn insert_acl(list: &mut Vec<Acl>, acl: Acl) {
    let at = list
        .iter()
        .position(|a| a.priority < acl.priority)
        .unwrap_or(list.len());
    list.insert(at, acl);
}

/// Reads a role's `acls` array; an entry of an unknown type or without a topic is skipped, and
/// of two entries with the same type and topic the first wins.
pub(super) fn parse_acls(array: &[Value]) -> [Vec<Acl>; 6] {
    let mut acls: [Vec<Acl>; 6] = Default::default();
    for kind in AclType::ALL {
        let list = &mut acls[kind.index()];
        for entry in array {
            let (Some(acltype), Some(topic)) = (get_str(entry, "acltype"), get_str(entry, "topic"))
            else {
                continue;
            };
            if AclType::parse(acltype) != Some(kind) || list.iter().any(|a| a.topic == topic) {
                continue;
            }
            insert_acl(
                list,
                Acl {
                    topic: topic.to_owned(),
                    priority: get_int(entry, "priority").unwrap_or(0),
                    allow: get_bool(entry, "allow").unwrap_or(false),
                },
            );
        }
    }
    acls
}

/// The text fields of an entry (`textname`, `textdescription`), when strings.
fn texts(entry: &Value) -> (Option<String>, Option<String>) {
    (
        get_str(entry, "textname").map(str::to_owned),
        get_str(entry, "textdescription").map(str::to_owned),
    )
}

/// The `(name, priority)` pairs of a `roles`/`clients` array, where `key` names the entries.
fn members<'a>(entry: &'a Value, list: &str, key: &str) -> Vec<(&'a str, i32)> {
    let Some(Value::Array(items)) = get(entry, list) else {
        return Vec::new();
    };
    items
        .iter()
        .filter(|item| item.is_object())
        .filter_map(|item| Some((get_str(item, key)?, get_int(item, "priority").unwrap_or(-1))))
        .collect()
}

/// Decodes a client's `password`, `salt` and `iterations`: `Ok(None)` when they are absent,
/// `Err` when present but unusable (the plugin then skips the whole client).
fn parse_password(entry: &Value) -> Result<Option<PasswordHash>, String> {
    let (Some(password), Some(salt), Some(iterations)) = (
        get_str(entry, "password"),
        get_str(entry, "salt"),
        get(entry, "iterations").and_then(Value::as_f64),
    ) else {
        return Ok(None);
    };
    // cJSON's (int) conversion of the number: truncation, saturating.
    let iterations = iterations as i32;
    if iterations < 1 {
        return Err(format!("\"iterations\" is {iterations}, not at least 1"));
    }
    let salt = base64::decode(salt).map_err(|e| format!("the salt is not base64: {e}"))?;
    if salt.is_empty() {
        return Err("the salt is empty".into());
    }
    let hash: [u8; HASH_LEN] = base64::decode(password)
        .map_err(|e| format!("the password hash is not base64: {e}"))?
        .try_into()
        .map_err(|h: Vec<u8>| format!("the password hash is {} bytes, not {HASH_LEN}", h.len()))?;
    Ok(Some(PasswordHash::pbkdf2_from_parts(
        iterations.unsigned_abs(),
        salt,
        hash,
    )))
}

impl Model {
    /// Builds the state from a parsed file. Only a wrong top-level shape is an error; entries
    /// the plugin would skip are skipped, with a warning each.
    pub(super) fn from_value(tree: &Value) -> Result<(Model, Vec<String>), String> {
        if !tree.is_object() {
            return Err("the file is not a JSON object".into());
        }
        let mut model = Model::default();
        let mut warnings = Vec::new();
        if let Some(access) = get(tree, "defaultACLAccess").filter(|v| v.is_object()) {
            for (which, name) in DEFAULT_ACCESS_NAMES.iter().enumerate() {
                model
                    .default_access
                    .set(which, get_bool(access, name).unwrap_or(false));
            }
        }
        let array = |key: &str| -> Result<&[Value], String> {
            match get(tree, key) {
                None => Ok(&[]),
                Some(Value::Array(items)) => Ok(items),
                Some(_) => Err(format!("\"{key}\" is not an array")),
            }
        };

        for (at, entry) in array("roles")?.iter().enumerate() {
            let Some(name) = entry
                .is_object()
                .then(|| get_str(entry, "rolename"))
                .flatten()
            else {
                warnings.push(format!("roles[{at}] has no \"rolename\" string: skipped"));
                continue;
            };
            if model.roles.contains_key(name) {
                warnings.push(format!("role \"{name}\" appears twice: the first is kept"));
                continue;
            }
            let (textname, textdescription) = texts(entry);
            let acls = match get(entry, "acls") {
                Some(Value::Array(items)) => parse_acls(items),
                _ => Default::default(),
            };
            model.roles.insert(
                name.to_owned(),
                Role {
                    textname,
                    textdescription,
                    acls,
                },
            );
        }

        for (at, entry) in array("clients")?.iter().enumerate() {
            let Some(name) = entry
                .is_object()
                .then(|| get_str(entry, "username"))
                .flatten()
            else {
                warnings.push(format!("clients[{at}] has no \"username\" string: skipped"));
                continue;
            };
            if model.clients.contains_key(name) {
                warnings.push(format!(
                    "client \"{name}\" appears twice: the first is kept"
                ));
                continue;
            }
            let password = match parse_password(entry) {
                Ok(password) => password,
                Err(reason) => {
                    warnings.push(format!("client \"{name}\": {reason}: skipped"));
                    continue;
                }
            };
            let (textname, textdescription) = texts(entry);
            let mut client = Client {
                clientid: get_str(entry, "clientid").map(str::to_owned),
                textname,
                textdescription,
                password,
                disabled: get_bool(entry, "disabled").unwrap_or(false),
                ..Client::default()
            };
            for (role, priority) in members(entry, "roles", "rolename") {
                if model.roles.contains_key(role) {
                    insert_member(&mut client.roles, role, priority);
                } else {
                    warnings.push(format!("client \"{name}\": no role \"{role}\": dropped"));
                }
            }
            model.clients.insert(name.to_owned(), client);
        }

        for (at, entry) in array("groups")?.iter().enumerate() {
            let Some(name) = entry
                .is_object()
                .then(|| get_str(entry, "groupname"))
                .flatten()
            else {
                warnings.push(format!("groups[{at}] has no \"groupname\" string: skipped"));
                continue;
            };
            if model.groups.contains_key(name) {
                warnings.push(format!("group \"{name}\" appears twice: the first is kept"));
                continue;
            }
            let (textname, textdescription) = texts(entry);
            let mut group = Group {
                textname,
                textdescription,
                roles: Vec::new(),
            };
            for (role, priority) in members(entry, "roles", "rolename") {
                if model.roles.contains_key(role) {
                    insert_member(&mut group.roles, role, priority);
                } else {
                    warnings.push(format!("group \"{name}\": no role \"{role}\": dropped"));
                }
            }
            for (username, priority) in members(entry, "clients", "username") {
                match model.clients.get_mut(username) {
                    Some(client) => {
                        insert_member(&mut client.groups, name, priority);
                    }
                    None => warnings.push(format!(
                        "group \"{name}\": no client \"{username}\": dropped"
                    )),
                }
            }
            model.groups.insert(name.to_owned(), group);
        }

        if let Some(name) = get_str(tree, "anonymousGroup") {
            if model.groups.contains_key(name) {
                model.anonymous_group = Some(name.to_owned());
            } else {
                warnings.push(format!("anonymousGroup \"{name}\" does not exist: ignored"));
            }
        }
        Ok((model, warnings))
    }

    /// The clients of a group with their priorities, by username as the plugin lists them.
    pub(super) fn group_clients(&self, group: &str) -> Vec<Member> {
        self.clients
            .iter()
            .filter_map(|(username, client)| {
                let m = client.groups.iter().find(|m| m.name == group)?;
                Some(Member {
                    name: username.clone(),
                    priority: m.priority,
                })
            })
            .collect()
    }

    /// The whole state as the plugin saves it (key order included).
    pub(super) fn to_value(&self) -> Value {
        let mut tree = Map::new();
        let mut access = Map::new();
        for (which, name) in DEFAULT_ACCESS_NAMES.iter().enumerate() {
            access.insert((*name).into(), self.default_access.get(which).into());
        }
        tree.insert("defaultACLAccess".into(), access.into());
        let clients = self
            .clients
            .iter()
            .map(|(name, c)| self.client_value(name, c, Detail::File))
            .collect::<Vec<_>>();
        tree.insert("clients".into(), clients.into());
        let groups = self
            .groups
            .iter()
            .map(|(name, g)| self.group_value(name, g, Detail::File))
            .collect::<Vec<_>>();
        tree.insert("groups".into(), groups.into());
        if let Some(name) = &self.anonymous_group {
            tree.insert("anonymousGroup".into(), name.as_str().into());
        }
        let roles = self
            .roles
            .iter()
            .map(|(name, r)| role_value(name, r))
            .collect::<Vec<_>>();
        tree.insert("roles".into(), roles.into());
        Value::Object(tree)
    }

    /// A client as the file (with its password hash) or a `getClient` response (with its
    /// groups, never the hash) shows it.
    pub(super) fn client_value(&self, name: &str, client: &Client, detail: Detail) -> Value {
        let mut obj = Map::new();
        obj.insert("username".into(), name.into());
        put_opt(&mut obj, "clientid", &client.clientid);
        put_opt(&mut obj, "textname", &client.textname);
        put_opt(&mut obj, "textdescription", &client.textdescription);
        if client.disabled {
            obj.insert("disabled".into(), true.into());
        }
        obj.insert("roles".into(), members_value(&client.roles, "rolename"));
        match detail {
            Detail::File => {
                if let Some(hash) = &client.password {
                    obj.insert("password".into(), base64::encode(hash.hash()).into());
                    obj.insert("salt".into(), base64::encode(hash.salt()).into());
                    obj.insert("iterations".into(), hash.iterations().unwrap_or(1).into());
                }
            }
            Detail::Response => {
                obj.insert("groups".into(), members_value(&client.groups, "groupname"));
            }
        }
        Value::Object(obj)
    }

    /// A group as the file or a `getGroup` response shows it.
    pub(super) fn group_value(&self, name: &str, group: &Group, detail: Detail) -> Value {
        let mut obj = Map::new();
        obj.insert("groupname".into(), name.into());
        put_opt(&mut obj, "textname", &group.textname);
        put_opt(&mut obj, "textdescription", &group.textdescription);
        let clients = self.group_clients(name);
        match detail {
            Detail::File => {
                obj.insert("roles".into(), members_value(&group.roles, "rolename"));
                obj.insert("clients".into(), members_value(&clients, "username"));
            }
            Detail::Response => {
                // getGroup lists member usernames only, before the roles.
                let names = clients
                    .iter()
                    .map(|m| {
                        let mut c = Map::new();
                        c.insert("username".into(), m.name.as_str().into());
                        Value::Object(c)
                    })
                    .collect::<Vec<_>>();
                obj.insert("clients".into(), names.into());
                obj.insert("roles".into(), members_value(&group.roles, "rolename"));
            }
        }
        Value::Object(obj)
    }
}

/// Whether a client or group is shown for the file or for a command response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Detail {
    File,
    Response,
}

/// A role as both the file and `getRole` show it: ACLs grouped by type, in type order.
pub(super) fn role_value(name: &str, role: &Role) -> Value {
    let mut obj = Map::new();
    obj.insert("rolename".into(), name.into());
    put_opt(&mut obj, "textname", &role.textname);
    put_opt(&mut obj, "textdescription", &role.textdescription);
    let mut acls = Vec::new();
    for kind in AclType::ALL {
        for acl in &role.acls[kind.index()] {
            let mut a = Map::new();
            a.insert("acltype".into(), kind.name().into());
            a.insert("topic".into(), acl.topic.as_str().into());
            a.insert("priority".into(), acl.priority.into());
            a.insert("allow".into(), acl.allow.into());
            acls.push(Value::Object(a));
        }
    }
    obj.insert("acls".into(), acls.into());
    Value::Object(obj)
}

/// A role or group list: each name, and its priority unless it is the default -1.
fn members_value(list: &[Member], key: &str) -> Value {
    list.iter()
        .map(|m| {
            let mut obj = Map::new();
            obj.insert(key.into(), m.name.as_str().into());
            if m.priority != -1 {
                obj.insert("priority".into(), m.priority.into());
            }
            Value::Object(obj)
        })
        .collect::<Vec<_>>()
        .into()
}

fn put_opt(obj: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        obj.insert(key.into(), v.as_str().into());
    }
}
