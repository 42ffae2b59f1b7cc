//! A protocol violation as one value: what the client broke, and the reason code it is told.
//!
//! Whatever finds a breach (framing a packet, decoding it, or a handler checking a decoded
//! packet against the rules) returns a [`Violation`] and does nothing else;
//! [`Broker::close_for_violation`] is the one place that answers it: a DISCONNECT with the
//! reason code to an MQTT 5 client that completed CONNECT, then the close, whose log line
//! names the violation. A refused CONNECT is not a violation: it is answered by a CONNACK
//! (`connect.rs`).

use super::conn::ConnState;
use super::{Broker, CloseReason, ConnId};
use crate::codec::{reason, DecodeError};
use std::time::Instant;

/// Why a connection ends for breaking the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The packet could not be framed or decoded; the codec says why.
    Decode(DecodeError),
    /// A well-formed packet broke a rule of the protocol or of the broker's settings.
    Rule {
        /// The MQTT 5 reason code of the DISCONNECT.
        code: u8,
        /// What was broken, for the log.
        why: &'static str,
    },
}

impl Violation {
    /// A breach of the protocol's rules, told as Protocol Error (0x82).
    pub(super) fn protocol(why: &'static str) -> Violation {
        Violation::Rule {
            code: reason::PROTOCOL_ERROR,
            why,
        }
    }

    /// The reason code an MQTT 5 client is told.
    pub fn reason_code(&self) -> u8 {
        match self {
            Violation::Decode(e) => e.reason_code(),
            Violation::Rule { code, .. } => *code,
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::Decode(e) => e.fmt(f),
            Violation::Rule { why, .. } => write!(f, "protocol error: {why}"),
        }
    }
}

impl From<DecodeError> for Violation {
    fn from(e: DecodeError) -> Violation {
        Violation::Decode(e)
    }
}

impl Broker {
    /// Ends connection `id` for violation `v`, telling an MQTT 5 client the reason code.
    pub(super) fn close_for_violation(&mut self, id: ConnId, v: Violation, now: Instant) {
        let connected = self
            .conn(id)
            .is_some_and(|c| matches!(c.state, ConnState::Active(_)));
        if connected {
            self.send_disconnect(id, v.reason_code());
        }
        self.close(id, CloseReason::Protocol(v), now);
    }
}
