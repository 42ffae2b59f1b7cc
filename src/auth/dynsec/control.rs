//! The `$CONTROL/dynamic-security/v1` command API of Mosquitto 2.0.20's plugin: a request
//! `{"commands":[{"command":"…", …}, …]}` in, `{"responses":[{"command":"…", "error":"…",
//! "data":{…}, "correlationData":"…"}, …]}` out, with the plugin's error strings.
//!
//! Every command checks all of its input before it changes anything, so a command either
//! applies whole or not at all (Mosquitto 2.0.15 made modifyClient and modifyGroup behave so),
//! and commands apply in the order given. Which connected clients must go after a change is
//! decided as the plugin's `mosquitto_kick_client_by_username` calls decide it. Passwords are
//! hashed at once and appear in no response.

use serde_json::{Map, Value};

use super::json::{get, get_bool, get_int, get_str, string};
use super::model::{
    insert_acl, insert_member, parse_acls, role_value, Acl, AclType, Client, Detail, Group, Member,
    Model, Role, DEFAULT_ACCESS_NAMES,
};
use crate::auth::passwd::{HashType, PasswordHash};

/// Iterations for new password hashes, as the plugin uses.
const PW_ITERATIONS: u32 = 101;

/// What one request produced.
pub(super) struct Reply {
    pub(super) responses: Vec<Value>,
    pub(super) kick: Vec<Option<String>>,
}

/// A command's answer: success with or without `data`, or one of the plugin's error strings.
type Answer = Result<Option<Value>, &'static str>;

/// Runs every command of a request against `model`.
pub(super) fn run(model: &mut Model, request: &[u8]) -> Reply {
    let mut ctx = Ctx {
        model,
        kick: Vec::new(),
    };
    let mut responses = Vec::new();
    // cJSON reads the first value and ignores what follows it.
    let tree = serde_json::Deserializer::from_slice(request)
        .into_iter::<Value>()
        .next();
    let Some(Ok(tree)) = tree else {
        responses.push(response(
            "Unknown command",
            Err("Payload not valid JSON"),
            None,
        ));
        return Reply {
            responses,
            kick: ctx.kick,
        };
    };
    let Some(Value::Array(commands)) = get(&tree, "commands") else {
        responses.push(response(
            "Unknown command",
            Err("Invalid/missing commands"),
            None,
        ));
        return Reply {
            responses,
            kick: ctx.kick,
        };
    };
    // As in the plugin, a command without a name is answered with the correlation data of the
    // command before it.
    let mut correlation: Option<&str> = None;
    for command in commands {
        if !command.is_object() {
            responses.push(response(
                "Unknown command",
                Err("Command not an object"),
                correlation,
            ));
            continue;
        }
        let Some(name) = get_str(command, "command") else {
            responses.push(response(
                "Unknown command",
                Err("Missing command"),
                correlation,
            ));
            continue;
        };
        correlation = match string(command, "correlationData") {
            Ok(c) => c,
            Err(()) => {
                responses.push(response(
                    name,
                    Err("Invalid correlationData data type."),
                    None,
                ));
                break;
            }
        };
        let Some((canonical, handler)) =
            COMMANDS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))
        else {
            responses.push(response(name, Err("Unknown command"), correlation));
            continue;
        };
        let answer = handler(&mut ctx, command);
        responses.push(response(canonical, answer, correlation));
    }
    let mut kick: Vec<Option<String>> = Vec::new();
    for k in ctx.kick {
        if !kick.contains(&k) {
            kick.push(k);
        }
    }
    Reply { responses, kick }
}

/// One entry of `responses`, keys in the plugin's order.
fn response(command: &str, answer: Answer, correlation: Option<&str>) -> Value {
    let mut obj = Map::new();
    obj.insert("command".into(), command.into());
    match answer {
        Ok(Some(data)) => {
            obj.insert("data".into(), data);
        }
        Ok(None) => {}
        Err(error) => {
            obj.insert("error".into(), error.into());
        }
    }
    if let Some(c) = correlation {
        obj.insert("correlationData".into(), c.into());
    }
    Value::Object(obj)
}

type Handler = fn(&mut Ctx, &Value) -> Answer;

/// Every command of the plugin, matched without regard to case.
const COMMANDS: [(&str, Handler); 31] = [
    ("setDefaultACLAccess", set_default_acl_access),
    ("getDefaultACLAccess", get_default_acl_access),
    ("createClient", create_client),
    ("deleteClient", delete_client),
    ("getClient", get_client),
    ("listClients", list_clients),
    ("modifyClient", modify_client),
    ("setClientPassword", set_client_password),
    ("setClientId", set_client_id),
    ("addClientRole", add_client_role),
    ("removeClientRole", remove_client_role),
    ("enableClient", enable_client),
    ("disableClient", disable_client),
    ("addGroupClient", add_group_client),
    ("createGroup", create_group),
    ("deleteGroup", delete_group),
    ("getGroup", get_group),
    ("listGroups", list_groups),
    ("modifyGroup", modify_group),
    ("removeGroupClient", remove_group_client),
    ("addGroupRole", add_group_role),
    ("removeGroupRole", remove_group_role),
    ("setAnonymousGroup", set_anonymous_group),
    ("getAnonymousGroup", get_anonymous_group),
    ("createRole", create_role),
    ("getRole", get_role),
    ("listRoles", list_roles),
    ("modifyRole", modify_role),
    ("deleteRole", delete_role),
    ("addRoleACL", add_role_acl),
    ("removeRoleACL", remove_role_acl),
];

/// The state a command works on, and the clients it decides to disconnect.
struct Ctx<'a> {
    model: &'a mut Model,
    kick: Vec<Option<String>>,
}

impl Ctx<'_> {
    /// Disconnect the clients connected with `username`.
    fn kick_user(&mut self, username: &str) {
        self.kick.push(Some(username.to_owned()));
    }

    /// The plugin's `group__kick_all`: the anonymous clients when it is the anonymous group,
    /// and the group's clients.
    fn kick_group(&mut self, group: &str) {
        if self.model.anonymous_group.as_deref() == Some(group) {
            self.kick.push(None);
        }
        for m in self.model.group_clients(group) {
            self.kick.push(Some(m.name));
        }
    }

    /// The plugin's `role__kick_all`: clients holding the role, and the clients of every group
    /// holding it.
    fn kick_role(&mut self, role: &str) {
        let users: Vec<String> = self
            .model
            .clients
            .iter()
            .filter(|(_, c)| c.roles.iter().any(|m| m.name == role))
            .map(|(name, _)| name.clone())
            .collect();
        for user in users {
            self.kick_user(&user);
        }
        let groups: Vec<String> = self
            .model
            .groups
            .iter()
            .filter(|(_, g)| g.roles.iter().any(|m| m.name == role))
            .map(|(name, _)| name.clone())
            .collect();
        for group in groups {
            self.kick_group(&group);
        }
    }
}

// ---- field helpers ----

/// Mosquitto's `mosquitto_validate_utf8` on a string JSON already decoded: no control
/// characters (U+0000–U+001F, U+007F–U+009F) and no non-characters.
fn valid_utf8(text: &str) -> bool {
    text.len() <= 65_535
        && text.chars().all(|c| {
            let u = u32::from(c);
            !(c.is_control() || (0xFDD0..=0xFDEF).contains(&u) || u & 0xFFFE == 0xFFFE)
        })
}

/// A required name: absent or not a string gives `missing`, invalid text gives `bad_utf8`.
fn name<'a>(
    cmd: &'a Value,
    key: &str,
    missing: &'static str,
    bad_utf8: &'static str,
) -> Result<&'a str, &'static str> {
    let value = get_str(cmd, key).ok_or(missing)?;
    if valid_utf8(value) {
        Ok(value)
    } else {
        Err(bad_utf8)
    }
}

fn username(cmd: &Value) -> Result<&str, &'static str> {
    name(
        cmd,
        "username",
        "Invalid/missing username",
        "Username not valid UTF-8",
    )
}

fn groupname(cmd: &Value) -> Result<&str, &'static str> {
    name(
        cmd,
        "groupname",
        "Invalid/missing groupname",
        "Group name not valid UTF-8",
    )
}

fn rolename(cmd: &Value) -> Result<&str, &'static str> {
    name(
        cmd,
        "rolename",
        "Invalid/missing rolename",
        "Role name not valid UTF-8",
    )
}

/// An optional string field: a present value of another type gives `wrong`.
fn optional<'a>(
    cmd: &'a Value,
    key: &str,
    wrong: &'static str,
) -> Result<Option<&'a str>, &'static str> {
    string(cmd, key).map_err(|()| wrong)
}

/// A string field when present with the right type; anything else leaves the value alone (the
/// modify commands' reading).
fn if_string(cmd: &Value, key: &str) -> Option<String> {
    get_str(cmd, key).map(str::to_owned)
}

/// Why a `roles` list cannot be used.
enum RolesError {
    /// Not an array, or an entry without a `rolename` string.
    Invalid,
    /// A role that does not exist.
    NotFound,
}

/// The plugin's `dynsec_rolelist__load_from_json`: `Ok(None)` without a `roles` key.
fn roles_list(model: &Model, cmd: &Value) -> Result<Option<Vec<Member>>, RolesError> {
    let Some(value) = get(cmd, "roles") else {
        return Ok(None);
    };
    let Value::Array(items) = value else {
        return Err(RolesError::Invalid);
    };
    let mut list = Vec::new();
    for item in items {
        let role = get_str(item, "rolename").ok_or(RolesError::Invalid)?;
        if !model.roles.contains_key(role) {
            return Err(RolesError::NotFound);
        }
        insert_member(&mut list, role, get_int(item, "priority").unwrap_or(-1));
    }
    Ok(Some(list))
}

/// The usual replies to a bad `roles` list.
fn roles_error(e: RolesError) -> &'static str {
    match e {
        RolesError::Invalid => "'roles' not an array or missing/invalid rolename",
        RolesError::NotFound => "Role not found",
    }
}

/// A fresh PBKDF2-SHA512 hash with a random 12-byte salt, as the plugin makes them.
fn hash_password(password: &str) -> Result<PasswordHash, &'static str> {
    PasswordHash::generate(HashType::Sha512Pbkdf2, password.as_bytes(), PW_ITERATIONS)
        .map_err(|_| "Internal error")
}

/// The list commands' paging: `offset` entries skipped, then `count` (negative: all). As in
/// the plugin, a `count` of 0 still returns one entry.
fn page<T>(items: impl Iterator<Item = T>, cmd: &Value) -> Vec<T> {
    let mut count = get_int(cmd, "count").unwrap_or(-1);
    let offset = get_int(cmd, "offset").unwrap_or(0);
    let mut out = Vec::new();
    for (i, item) in items.enumerate() {
        if i as i64 >= i64::from(offset) {
            out.push(item);
            if count >= 0 {
                count -= 1;
                if count <= 0 {
                    break;
                }
            }
        }
    }
    out
}

fn verbose(cmd: &Value) -> bool {
    get_bool(cmd, "verbose").unwrap_or(false)
}

fn object(entries: Vec<(&str, Value)>) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

// ---- default access ----

fn set_default_acl_access(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let Some(Value::Array(acls)) = get(cmd, "acls") else {
        return Err("Missing/invalid actions array");
    };
    for acl in acls {
        // mosquitto_ctrl 2.0.11 sends "allow"/"deny" strings instead of booleans.
        let allow = match get(acl, "allow") {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("allow") => Some(true),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("deny") => Some(false),
            _ => None,
        };
        let which = get_str(acl, "acltype").and_then(|t| {
            DEFAULT_ACCESS_NAMES
                .iter()
                .position(|n| n.eq_ignore_ascii_case(t))
        });
        if let (Some(which), Some(allow)) = (which, allow) {
            ctx.model.default_access.set(which, allow);
        }
    }
    Ok(None)
}

fn get_default_acl_access(ctx: &mut Ctx, _cmd: &Value) -> Answer {
    let acls = DEFAULT_ACCESS_NAMES
        .iter()
        .enumerate()
        .map(|(which, name)| {
            object(vec![
                ("acltype", (*name).into()),
                ("allow", ctx.model.default_access.get(which).into()),
            ])
        })
        .collect::<Vec<_>>();
    Ok(Some(object(vec![("acls", acls.into())])))
}

// ---- clients ----

fn create_client(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let user = username(cmd)?;
    let password = optional(cmd, "password", "Invalid/missing password")?;
    let clientid = optional(cmd, "clientid", "Invalid/missing client id")?;
    if clientid.is_some_and(|id| !valid_utf8(id)) {
        return Err("Client ID not valid UTF-8");
    }
    let textname = optional(cmd, "textname", "Invalid/missing textname")?;
    let textdescription = optional(cmd, "textdescription", "Invalid/missing textdescription")?;
    if ctx.model.clients.contains_key(user) {
        return Err("Client already exists");
    }
    let password = password.map(hash_password).transpose()?;
    let roles = roles_list(ctx.model, cmd)
        .map_err(roles_error)?
        .unwrap_or_default();
    let mut groups = Vec::new();
    if let Some(Value::Array(items)) = get(cmd, "groups") {
        for item in items.iter().filter(|i| i.is_object()) {
            let Some(group) = get_str(item, "groupname") else {
                continue;
            };
            if !ctx.model.groups.contains_key(group) {
                return Err("Group not found");
            }
            // Listing a group twice fails in the plugin's add step.
            if !insert_member(&mut groups, group, get_int(item, "priority").unwrap_or(-1)) {
                return Err("Internal error");
            }
        }
    }
    ctx.model.clients.insert(
        user.to_owned(),
        Client {
            clientid: clientid.filter(|id| !id.is_empty()).map(str::to_owned),
            textname: textname.map(str::to_owned),
            textdescription: textdescription.map(str::to_owned),
            password,
            disabled: false,
            roles,
            groups,
        },
    );
    Ok(None)
}

fn delete_client(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let user = get_str(cmd, "username").ok_or("Invalid/missing username")?;
    if ctx.model.clients.remove(user).is_none() {
        return Err("Client not found");
    }
    ctx.kick_user(user);
    Ok(None)
}

/// The client a command names, or "Client not found".
fn client_mut<'m>(model: &'m mut Model, user: &str) -> Result<&'m mut Client, &'static str> {
    model.clients.get_mut(user).ok_or("Client not found")
}

fn enable_client(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let user = username(cmd)?;
    client_mut(ctx.model, user)?.disabled = false;
    Ok(None)
}

fn disable_client(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let user = username(cmd)?;
    client_mut(ctx.model, user)?.disabled = true;
    ctx.kick_user(user);
    Ok(None)
}

fn set_client_id(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let user = username(cmd)?;
    let clientid = optional(cmd, "clientid", "Invalid/missing client ID")?;
    if clientid.is_some_and(|id| !valid_utf8(id)) {
        return Err("Client ID not valid UTF-8");
    }
    client_mut(ctx.model, user)?.clientid = clientid.filter(|id| !id.is_empty()).map(str::to_owned);
    ctx.kick_user(user);
    Ok(None)
}

fn set_client_password(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let user = username(cmd)?;
    let password = get_str(cmd, "password").ok_or("Invalid/missing password")?;
    if password.is_empty() {
        return Err("Empty password is not allowed");
    }
    let client = client_mut(ctx.model, user)?;
    client.password = Some(hash_password(password)?);
    ctx.kick_user(user);
    Ok(None)
}

fn modify_client(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let user = username(cmd)?;
    if !ctx.model.clients.contains_key(user) {
        return Err("Client not found");
    }
    let clientid = get_str(cmd, "clientid").map(|id| (!id.is_empty()).then(|| id.to_owned()));
    let password = get_str(cmd, "password").filter(|p| !p.is_empty());
    let textname = if_string(cmd, "textname");
    let textdescription = if_string(cmd, "textdescription");
    let roles = roles_list(ctx.model, cmd).map_err(roles_error)?;
    let groups = match get(cmd, "groups") {
        Some(Value::Array(items)) => {
            let mut groups = Vec::new();
            for item in items.iter().filter(|i| i.is_object()) {
                let group = get_str(item, "groupname")
                    .ok_or("'groups' contains an object with an invalid 'groupname'")?;
                if !ctx.model.groups.contains_key(group) {
                    return Err(
                        "'groups' contains an object with a 'groupname' that does not exist",
                    );
                }
                insert_member(&mut groups, group, get_int(item, "priority").unwrap_or(-1));
            }
            Some(groups)
        }
        _ => None,
    };
    let password = password.map(hash_password).transpose()?;

    let client = client_mut(ctx.model, user)?;
    if let Some(clientid) = clientid {
        client.clientid = clientid;
    }
    if password.is_some() {
        client.password = password;
    }
    if textname.is_some() {
        client.textname = textname;
    }
    if textdescription.is_some() {
        client.textdescription = textdescription;
    }
    if let Some(roles) = roles {
        client.roles = roles;
    }
    if let Some(groups) = groups {
        client.groups = groups;
    }
    ctx.kick_user(user);
    Ok(None)
}

fn get_client(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let user = username(cmd)?;
    let client = ctx.model.clients.get(user).ok_or("Client not found")?;
    let value = ctx.model.client_value(user, client, Detail::Response);
    Ok(Some(object(vec![("client", value)])))
}

fn list_clients(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let model = &*ctx.model;
    let verbose = verbose(cmd);
    let clients = page(model.clients.iter(), cmd)
        .into_iter()
        .map(|(name, c)| {
            if verbose {
                model.client_value(name, c, Detail::Response)
            } else {
                name.as_str().into()
            }
        })
        .collect::<Vec<_>>();
    Ok(Some(object(vec![
        ("totalCount", model.clients.len().into()),
        ("clients", clients.into()),
    ])))
}

fn add_client_role(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let user = username(cmd)?;
    let role = rolename(cmd)?;
    let priority = get_int(cmd, "priority").unwrap_or(-1);
    if !ctx.model.clients.contains_key(user) {
        return Err("Client not found");
    }
    if !ctx.model.roles.contains_key(role) {
        return Err("Role not found");
    }
    // The plugin answers a role the client already holds with its generic error.
    if !insert_member(&mut client_mut(ctx.model, user)?.roles, role, priority) {
        return Err("Internal error");
    }
    ctx.kick_user(user);
    Ok(None)
}

fn remove_client_role(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let user = username(cmd)?;
    let role = rolename(cmd)?;
    if !ctx.model.clients.contains_key(user) {
        return Err("Client not found");
    }
    if !ctx.model.roles.contains_key(role) {
        return Err("Role not found");
    }
    client_mut(ctx.model, user)?
        .roles
        .retain(|m| m.name != role);
    ctx.kick_user(user);
    Ok(None)
}

// ---- groups ----

fn create_group(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let group = groupname(cmd)?;
    let textname = optional(cmd, "textname", "Invalid/missing textname")?;
    let textdescription = optional(cmd, "textdescription", "Invalid/missing textdescription")?;
    if ctx.model.groups.contains_key(group) {
        return Err("Group already exists");
    }
    let roles = match roles_list(ctx.model, cmd) {
        Ok(roles) => roles.unwrap_or_default(),
        Err(RolesError::NotFound) => return Err("Role not found"),
        Err(RolesError::Invalid) => return Err("Internal error"),
    };
    ctx.model.groups.insert(
        group.to_owned(),
        Group {
            textname: textname.map(str::to_owned),
            textdescription: textdescription.map(str::to_owned),
            roles,
        },
    );
    Ok(None)
}

fn delete_group(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let group = groupname(cmd)?;
    if !ctx.model.groups.contains_key(group) {
        return Err("Group not found");
    }
    // Mosquitto 2.0.15 forbade this: the anonymous group must always exist.
    if ctx.model.anonymous_group.as_deref() == Some(group) {
        return Err("Deleting the anonymous group is forbidden");
    }
    ctx.kick_group(group);
    ctx.model.groups.remove(group);
    for client in ctx.model.clients.values_mut() {
        client.groups.retain(|m| m.name != group);
    }
    Ok(None)
}

/// The two group-and-client fields of addGroupClient/removeGroupClient.
fn group_client_names(cmd: &Value) -> Result<(&str, &str), &'static str> {
    Ok((username(cmd)?, groupname(cmd)?))
}

/// The client of a group-membership command, once both it and the group are known to exist
/// (the client is looked up first, as the plugin does).
fn member_of<'m>(
    model: &'m mut Model,
    user: &str,
    group: &str,
) -> Result<&'m mut Client, &'static str> {
    if !model.clients.contains_key(user) {
        return Err("Client not found");
    }
    if !model.groups.contains_key(group) {
        return Err("Group not found");
    }
    client_mut(model, user)
}

fn add_group_client(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let (user, group) = group_client_names(cmd)?;
    let priority = get_int(cmd, "priority").unwrap_or(-1);
    // The plugin disconnects the username whatever the outcome.
    ctx.kick_user(user);
    let client = member_of(ctx.model, user, group)?;
    if !insert_member(&mut client.groups, group, priority) {
        return Err("Client is already in this group");
    }
    Ok(None)
}

fn remove_group_client(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let (user, group) = group_client_names(cmd)?;
    ctx.kick_user(user);
    member_of(ctx.model, user, group)?
        .groups
        .retain(|m| m.name != group);
    Ok(None)
}

fn get_group(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let name = groupname(cmd)?;
    let group = ctx.model.groups.get(name).ok_or("Group not found")?;
    let value = ctx.model.group_value(name, group, Detail::Response);
    Ok(Some(object(vec![("group", value)])))
}

fn list_groups(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let model = &*ctx.model;
    let verbose = verbose(cmd);
    let groups = page(model.groups.iter(), cmd)
        .into_iter()
        .map(|(name, g)| {
            if verbose {
                model.group_value(name, g, Detail::Response)
            } else {
                name.as_str().into()
            }
        })
        .collect::<Vec<_>>();
    Ok(Some(object(vec![
        ("totalCount", model.groups.len().into()),
        ("groups", groups.into()),
    ])))
}

fn modify_group(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let name = groupname(cmd)?;
    if !ctx.model.groups.contains_key(name) {
        return Err("Group not found");
    }
    let textname = if_string(cmd, "textname");
    let textdescription = if_string(cmd, "textdescription");
    let roles = roles_list(ctx.model, cmd).map_err(roles_error)?;
    let clients = match get(cmd, "clients") {
        Some(Value::Array(items)) => {
            let mut clients = Vec::new();
            for item in items.iter().filter(|i| i.is_object()) {
                let user = get_str(item, "username")
                    .ok_or("'clients' contains an object with an invalid 'username'")?;
                if !ctx.model.clients.contains_key(user) {
                    return Err(
                        "'clients' contains an object with a 'username' that does not exist",
                    );
                }
                insert_member(&mut clients, user, get_int(item, "priority").unwrap_or(-1));
            }
            Some(clients)
        }
        _ => None,
    };

    if let Some(clients) = clients {
        // The members before the change go, then the members after it.
        ctx.kick_group(name);
        for client in ctx.model.clients.values_mut() {
            client.groups.retain(|m| m.name != name);
        }
        for m in clients {
            if let Some(client) = ctx.model.clients.get_mut(&m.name) {
                insert_member(&mut client.groups, name, m.priority);
            }
        }
    }
    if let Some(group) = ctx.model.groups.get_mut(name) {
        if textname.is_some() {
            group.textname = textname;
        }
        if textdescription.is_some() {
            group.textdescription = textdescription;
        }
        if let Some(roles) = roles {
            group.roles = roles;
        }
    }
    ctx.kick_group(name);
    Ok(None)
}

/// The group and role a group-role command names, both existing.
fn group_and_role<'c>(ctx: &Ctx, cmd: &'c Value) -> Result<(&'c str, &'c str, i32), &'static str> {
    let group = groupname(cmd)?;
    let role = rolename(cmd)?;
    let priority = get_int(cmd, "priority").unwrap_or(-1);
    if !ctx.model.groups.contains_key(group) {
        return Err("Group not found");
    }
    if !ctx.model.roles.contains_key(role) {
        return Err("Role not found");
    }
    Ok((group, role, priority))
}

fn add_group_role(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let (group, role, priority) = group_and_role(ctx, cmd)?;
    let Some(g) = ctx.model.groups.get_mut(group) else {
        return Err("Group not found");
    };
    if !insert_member(&mut g.roles, role, priority) {
        return Err("Group is already in this role");
    }
    ctx.kick_group(group);
    Ok(None)
}

fn remove_group_role(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let (group, role, _) = group_and_role(ctx, cmd)?;
    if let Some(g) = ctx.model.groups.get_mut(group) {
        g.roles.retain(|m| m.name != role);
    }
    ctx.kick_group(group);
    Ok(None)
}

fn set_anonymous_group(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let group = groupname(cmd)?;
    if !ctx.model.groups.contains_key(group) {
        return Err("Group not found");
    }
    ctx.model.anonymous_group = Some(group.to_owned());
    ctx.kick.push(None);
    Ok(None)
}

fn get_anonymous_group(ctx: &mut Ctx, _cmd: &Value) -> Answer {
    let name = ctx.model.anonymous_group.as_deref().unwrap_or("");
    Ok(Some(object(vec![(
        "group",
        object(vec![("groupname", name.into())]),
    )])))
}

// ---- roles ----

fn create_role(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let role = rolename(cmd)?;
    let textname = optional(cmd, "textname", "Invalid/missing textname")?;
    let textdescription = optional(cmd, "textdescription", "Invalid/missing textdescription")?;
    if ctx.model.roles.contains_key(role) {
        return Err("Role already exists");
    }
    let acls = match get(cmd, "acls") {
        Some(Value::Array(items)) => parse_acls(items),
        _ => Default::default(),
    };
    ctx.model.roles.insert(
        role.to_owned(),
        Role {
            textname: textname.map(str::to_owned),
            textdescription: textdescription.map(str::to_owned),
            acls,
        },
    );
    Ok(None)
}

fn get_role(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let name = rolename(cmd)?;
    let role = ctx.model.roles.get(name).ok_or("Role not found")?;
    Ok(Some(object(vec![("role", role_value(name, role))])))
}

fn list_roles(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let verbose = verbose(cmd);
    let roles = page(ctx.model.roles.iter(), cmd)
        .into_iter()
        .map(|(name, r)| {
            if verbose {
                role_value(name, r)
            } else {
                name.as_str().into()
            }
        })
        .collect::<Vec<_>>();
    Ok(Some(object(vec![
        ("totalCount", ctx.model.roles.len().into()),
        ("roles", roles.into()),
    ])))
}

fn modify_role(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let name = rolename(cmd)?;
    let role = ctx.model.roles.get_mut(name).ok_or("Role does not exist")?;
    if let Some(t) = if_string(cmd, "textname") {
        role.textname = Some(t);
    }
    if let Some(t) = if_string(cmd, "textdescription") {
        role.textdescription = Some(t);
    }
    if let Some(Value::Array(items)) = get(cmd, "acls") {
        role.acls = parse_acls(items);
    }
    // The plugin disconnects nobody here: ACLs are checked afresh at every operation.
    Ok(None)
}

fn delete_role(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let name = rolename(cmd)?;
    if !ctx.model.roles.contains_key(name) {
        return Err("Role not found");
    }
    ctx.kick_role(name);
    ctx.model.roles.remove(name);
    for client in ctx.model.clients.values_mut() {
        client.roles.retain(|m| m.name != name);
    }
    for group in ctx.model.groups.values_mut() {
        group.roles.retain(|m| m.name != name);
    }
    Ok(None)
}

/// The role, ACL type and topic of addRoleACL/removeRoleACL, checked in the plugin's order.
fn role_acl<'c>(ctx: &Ctx, cmd: &'c Value) -> Result<(&'c str, AclType, &'c str), &'static str> {
    let role = rolename(cmd)?;
    if !ctx.model.roles.contains_key(role) {
        return Err("Role not found");
    }
    let acltype = get_str(cmd, "acltype").ok_or("Invalid/missing acltype")?;
    let kind = AclType::parse(acltype).ok_or("Unknown acltype")?;
    let topic = get_str(cmd, "topic").ok_or("Invalid/missing topic")?;
    if !valid_utf8(topic) {
        return Err("Topic not valid UTF-8");
    }
    // mosquitto_sub_topic_check: wildcards only as whole levels, `#` last.
    if !topic.is_empty() && !crate::codec::packet::valid_topic_filter(topic) {
        return Err("Invalid ACL topic");
    }
    Ok((role, kind, topic))
}

fn add_role_acl(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let (name, kind, topic) = role_acl(ctx, cmd)?;
    let Some(role) = ctx.model.roles.get_mut(name) else {
        return Err("Role not found");
    };
    let list = &mut role.acls[kind.index()];
    if list.iter().any(|a| a.topic == topic) {
        return Err("ACL with this topic already exists");
    }
    insert_acl(
        list,
        Acl {
            topic: topic.to_owned(),
            priority: get_int(cmd, "priority").unwrap_or(0),
            allow: get_bool(cmd, "allow").unwrap_or(false),
        },
    );
    ctx.kick_role(name);
    Ok(None)
}

fn remove_role_acl(ctx: &mut Ctx, cmd: &Value) -> Answer {
    let (name, kind, topic) = role_acl(ctx, cmd)?;
    let Some(role) = ctx.model.roles.get_mut(name) else {
        return Err("Role not found");
    };
    let list = &mut role.acls[kind.index()];
    let Some(at) = list.iter().position(|a| a.topic == topic) else {
        return Err("ACL not found");
    };
    list.remove(at);
    ctx.kick_role(name);
    Ok(None)
}
