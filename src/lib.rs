//! midge: a small, fast MQTT broker.
//!
//! A broker is just TCP sockets, packet parsing and a dictionary of subscriptions. The modules
//! follow that split: [`codec`] turns bytes into packets and back, [`broker`] is the protocol
//! logic (sessions, routing, retained messages) with no sockets and no clock of its own, and
//! [`server`] is the thin `mio` loop that moves bytes between sockets and the broker.

pub mod auth;
pub mod broker;
pub mod cli;
pub mod codec;
pub mod config;
pub(crate) mod http;
pub mod logging;
pub mod notify;
pub mod privileges;
pub mod server;
pub mod store;
pub mod topic;
pub(crate) mod transport;
