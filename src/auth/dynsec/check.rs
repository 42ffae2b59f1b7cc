//! The checks, on a precomputed index: each client's roles in the order the plugin consults
//! them, each role's ACLs split by kind and already in priority order. The index is rebuilt
//! after every change, so a check is one hash lookup and a walk of the client's rules, as an
//! ACL-file check is.
//!
//! The order (the plugin's `acl_check`): the client's own roles, highest priority first; then
//! its groups, highest priority first, each group's roles highest priority first. Within a
//! role, a subscribe or unsubscribe check tries the literal ACL for the exact filter before the
//! patterns. The first ACL that matches decides. A client without a username uses the anonymous
//! group's roles. A username dynsec does not know is not decided here at all.

use std::collections::HashMap;

use super::model::{AclType, Model};
use super::{DynAccess, DynAuth};
use crate::topic::topic_matches;

/// One ACL as a check needs it: the topic (filter) and whether it allows.
type Rule = (Box<str>, bool);

/// One role's ACLs by kind, highest priority first.
#[derive(Debug, Clone, PartialEq, Default)]
struct CompiledRole {
    acls: [Box<[Rule]>; 6],
}

/// The roles each client consults, in order, as positions in [`Index::roles`].
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Index {
    roles: Vec<CompiledRole>,
    clients: HashMap<Box<str>, Box<[u32]>>,
    anonymous: Box<[u32]>,
}

impl Index {
    /// Builds the index for `model`. A role reached twice (directly and through a group, say)
    /// is kept at its first place only: a second visit could not match where the first did not.
    pub(super) fn build(model: &Model) -> Index {
        let mut positions = HashMap::new();
        let mut roles = Vec::with_capacity(model.roles.len());
        for (name, role) in &model.roles {
            positions.insert(name.as_str(), roles.len() as u32);
            roles.push(CompiledRole {
                acls: role.acls.clone().map(|list| {
                    list.into_iter()
                        .map(|a| (a.topic.into_boxed_str(), a.allow))
                        .collect()
                }),
            });
        }
        let ordered = |names: &mut dyn Iterator<Item = &str>| -> Box<[u32]> {
            let mut list: Vec<u32> = Vec::new();
            for p in names.filter_map(|n| positions.get(n).copied()) {
                if !list.contains(&p) {
                    list.push(p);
                }
            }
            list.into_boxed_slice()
        };
        let group_roles = |group: &str| {
            model
                .groups
                .get(group)
                .into_iter()
                .flat_map(|g| g.roles.iter().map(|m| m.name.as_str()))
        };
        let clients = model
            .clients
            .iter()
            .map(|(username, client)| {
                let own = client.roles.iter().map(|m| m.name.as_str());
                let grouped = client.groups.iter().flat_map(|m| group_roles(&m.name));
                (username.as_str().into(), ordered(&mut own.chain(grouped)))
            })
            .collect();
        let anonymous = match &model.anonymous_group {
            Some(group) => ordered(&mut group_roles(group)),
            None => Box::default(),
        };
        Index {
            roles,
            clients,
            anonymous,
        }
    }
}

/// The plugin's basic-auth check.
pub(super) fn authenticate(
    model: &Model,
    username: Option<&str>,
    password: Option<&[u8]>,
    client_id: &str,
) -> DynAuth {
    let (Some(username), Some(password)) = (username, password) else {
        return DynAuth::Defer;
    };
    let Some(client) = model.clients.get(username) else {
        return DynAuth::Defer;
    };
    if client.disabled {
        return DynAuth::Denied;
    }
    if client.clientid.as_deref().is_some_and(|id| id != client_id) {
        return DynAuth::Denied;
    }
    match &client.password {
        Some(hash) if hash.verify(password) => DynAuth::Allowed,
        Some(_) => DynAuth::Denied,
        // A client without a password: some other authority may know it.
        None => DynAuth::Defer,
    }
}

/// The plugin's ACL check: `Some(allowed)` when dynsec decides, `None` when it defers (unknown
/// username, or no ACL matched and the default access for this kind is deny).
pub(super) fn access(
    model: &Model,
    index: &Index,
    username: Option<&str>,
    access: DynAccess,
    topic: &str,
) -> Option<bool> {
    let roles: &[u32] = match username {
        Some(name) => index.clients.get(name)?,
        None => &index.anonymous,
    };
    let (literal, pattern, default) = match access {
        DynAccess::PublishSend => (
            None,
            AclType::PublishClientSend,
            model.default_access.publish_client_send,
        ),
        DynAccess::PublishReceive => (
            None,
            AclType::PublishClientReceive,
            model.default_access.publish_client_receive,
        ),
        DynAccess::Subscribe => (
            Some(AclType::SubscribeLiteral),
            AclType::SubscribePattern,
            model.default_access.subscribe,
        ),
        DynAccess::Unsubscribe => (
            Some(AclType::UnsubscribeLiteral),
            AclType::UnsubscribePattern,
            model.default_access.unsubscribe,
        ),
    };
    let is_filter = literal.is_some();
    for &role in roles {
        let role = &index.roles[role as usize];
        if let Some(kind) = literal {
            if let Some((_, allow)) = role.acls[kind.index()].iter().find(|(t, _)| **t == *topic) {
                return Some(*allow);
            }
        }
        let matched = role.acls[pattern.index()].iter().find(|(acl, _)| {
            if is_filter {
                sub_acl_check(acl, topic)
            } else {
                topic_matches(acl, topic)
            }
        });
        if let Some((_, allow)) = matched {
            return Some(*allow);
        }
    }
    // Default access never opens `$CONTROL` topics: they must be granted explicitly.
    (default && !topic.starts_with("$CONTROL")).then_some(true)
}

/// The plugin's `sub_acl_check`: whether the ACL pattern `acl` covers every topic the filter
/// `sub` can match, level by level (`+` covers any one level, `+` included; a trailing `#` covers
/// what remains, `#` included). Unlike topic matching it has no rule for `$` topics: a
/// `subscribePattern` of `#` allows subscribing to `$SYS/#`.
pub(super) fn sub_acl_check(acl: &str, sub: &str) -> bool {
    if acl == "#" {
        return true;
    }
    let (acl, acl_hash) = strip_multi_level(acl);
    let (sub, sub_hash) = strip_multi_level(sub);
    if sub_hash && !acl_hash {
        return false;
    }
    let (acl_levels, sub_levels) = (acl.split('/').count(), sub.split('/').count());
    if acl_levels > sub_levels || (sub_levels > acl_levels && !acl_hash) {
        return false;
    }
    let mut acl = acl.split('/');
    sub.split('/').all(|level| match acl.next() {
        Some(a) => a == "+" || a == level,
        None => acl_hash,
    })
}

/// A filter without its trailing `#` level, and whether it had one.
fn strip_multi_level(filter: &str) -> (&str, bool) {
    if filter == "#" {
        ("", true)
    } else if let Some(rest) = filter.strip_suffix("/#") {
        (rest, true)
    } else {
        (filter, false)
    }
}
