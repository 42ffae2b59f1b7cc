//! PUBLISHes to `$CONTROL/...`: requests to the broker itself, never routed to subscribers.
//!
//! Mosquitto 2.0 hands every PUBLISH whose topic starts with `$CONTROL/` to whatever serves
//! that exact topic, once the publish access check has let it through, and passes none of them
//! on to other clients; a topic nothing serves is acknowledged and dropped. midge does the
//! same, and [`Broker::handle_control`] is the one place that decides what each topic does.

use super::{dynsec, Broker, ConnId, SessionId};
use crate::codec::{reason, Publish};
use std::time::Instant;

/// True for a topic that is a request to the broker and never a message to route.
pub(super) fn is_control(topic: &str) -> bool {
    topic.starts_with("$CONTROL/")
}

impl Broker {
    /// A PUBLISH from connection `id` (session `sid`) to `$CONTROL/...` `topic` that passed the
    /// publish access check. Returns the reason code to acknowledge it with.
    pub(super) fn handle_control(
        &mut self,
        id: ConnId,
        sid: SessionId,
        p: &Publish<'_>,
        topic: &str,
        from_bridge: bool,
        now: Instant,
    ) -> u8 {
        match topic {
            // A bridge's message came through no access check: never served.
            dynsec::CONTROL_TOPIC if !from_bridge => self.serve_dynsec(id, sid, p, now),
            // Nothing serves this topic: acknowledged and dropped, as Mosquitto does.
            _ => reason::SUCCESS,
        }
    }
}
