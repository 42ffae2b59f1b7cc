//! Authentication and authorisation with Mosquitto's file formats, so users migrating from
//! Mosquitto keep their files: [`passwd`] reads and writes `password_file`s as
//! `mosquitto_passwd` makes them, [`acl`] loads an `acl_file` and answers "may this client
//! publish / receive / subscribe here?".
//!
//! Pure logic over file contents: nothing here opens sockets, logs, or knows about packets or
//! listeners. The broker loads the files (at start and on SIGHUP), logs the warnings, and asks
//! these types during CONNECT, PUBLISH, SUBSCRIBE and delivery.

pub mod acl;
pub mod base64;
pub mod passwd;

pub use acl::{filter_covers, filters_intersect, Acl};
pub use passwd::{hash_password, PasswordFile};
