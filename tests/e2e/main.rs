//! midge's end-to-end tests, in one test binary: the real `midge` binary (or, with
//! `MIDGE_TEST_BROKER=mosquitto`, Mosquitto, to check the tests themselves) started on ephemeral
//! ports and driven over sockets by hand-made packets, mosquitto_pub/sub, rumqttc, paho and a
//! replayed PubSubClient session; plus the checks that need the built artefacts (the Debian
//! package, the ARM builds, systemd units), the store driven directly, and the fuzz corpus
//! replay. Protocol permutations that need no socket belong in the broker's in-process tests
//! (`src/broker/tests`), which run on simulated time.
//!
//! Each file is one module; `cargo test --test e2e MODULE::` runs one of them. Tests run in
//! parallel threads of this one process, so nothing here may change process-wide state
//! (environment, working directory, umask, limits) and each test makes its own ports, temporary
//! directories and users. Helpers live in `common`.

mod common;

mod admin;
mod backpressure;
mod bad_input;
mod bridges;
mod bridges_tls;
mod cli_config;
mod conformance_v311;
mod conformance_v5;
mod connect;
mod cross;
mod dashboard;
mod dynsec;
mod fd_limit;
mod flow_control;
mod fuzz_corpus;
mod http;
mod import;
mod keepalive;
mod limits;
mod listener_options;
mod logging;
mod options;
mod package;
mod passwd_tool;
mod persistence;
mod privileges;
mod publish_qos;
mod pubsubclient_replay;
mod quiet_disk;
mod reauth;
mod retained;
mod routing;
mod security;
mod service;
mod sessions;
mod store_basic;
mod store_crash;
mod store_full;
mod store_once;
mod store_recovery;
mod subscribe;
mod sys;
mod systemd;
mod tls;
mod torture;
mod v5_codec;
mod v5_connack;
mod v5_disconnect;
mod v5_flow_control;
mod v5_message_expiry;
mod v5_mixed;
mod v5_properties;
mod v5_sessions;
mod v5_shared;
mod v5_sub_options;
mod v5_topic_alias;
mod v5_will;
mod websockets;
mod will;
