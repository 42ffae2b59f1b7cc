//! `sessions-server`: the least a broker can do for the `sessions` scenario, as a control for
//! how a drain grows with the number of sessions. It remembers which client ids subscribed in a
//! persistent session, keeps every QoS 1 message published in one list, and sends a returning
//! persistent session the whole list at QoS 1, at most [`WINDOW`] in flight (the default
//! `max_inflight_messages` of Mosquitto and midge), one more for each PUBACK. No topics, no
//! queues per session, no store: what its drain costs on top of that is the machine's (the
//! kernel's TCP path, the caches), which a broker pays as well. One thread, one epoll loop.

use crate::net::{self, Conn, ReadOutcome};
use crate::wire::{self, Packet, PUBACK};
use std::collections::HashSet;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// QoS 1 messages in flight to one session.
const WINDOW: usize = 20;
/// The listener's epoll token (connections use their slot number).
const LISTENER: u64 = u64::MAX;

struct Client {
    conn: Conn,
    /// From CONNECT, if the session is persistent.
    persistent_id: Option<String>,
    /// Sending the list: the index of the next message, and how many are unacknowledged.
    draining: bool,
    next: usize,
    inflight: usize,
    packet_id: u16,
    /// Watched for room to write.
    watching_out: bool,
}

/// One QoS 1 PUBLISH as it came, and where its packet id is, to send it again under another.
struct Kept {
    raw: Vec<u8>,
    id_at: usize,
}

/// Serves until killed.
pub fn serve(addr: SocketAddr) -> io::Result<()> {
    net::raise_fd_limit();
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    // The queue of connections not yet accepted, as midge's: with `std`'s 128, the 1 000
    // sessions reconnecting at once overflow it and wait a second for their SYN to be sent
    // again.
    // SAFETY: `listen` again on a descriptor the listener owns only changes its backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), 1024) } != 0 {
        return Err(io::Error::last_os_error());
    }
    eprintln!("sessions-server listening on {}", listener.local_addr()?);
    let mut ep = net::Epoll::new(1024)?;
    ep.add(listener.as_raw_fd(), LISTENER, false)?;
    let mut slots: Vec<Option<Client>> = Vec::new();
    let mut sessions: HashSet<String> = HashSet::new();
    let mut kept: Vec<Kept> = Vec::new();
    loop {
        for (token, events) in ep.wait(Duration::from_secs(1))? {
            if token == LISTENER {
                accept_all(&listener, &ep, &mut slots)?;
                continue;
            }
            let i = token as usize;
            let Some(Some(c)) = slots.get_mut(i) else {
                continue;
            };
            let input = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
            let keep = if events & input != 0 {
                serve_client(c, &mut sessions, &mut kept).unwrap_or(false)
            } else {
                true
            };
            let keep = keep && refill_and_flush(i, c, &ep, &kept).unwrap_or(false);
            if !keep {
                slots[i] = None; // closing the socket takes it out of the epoll set
            }
        }
    }
}

fn accept_all(
    listener: &TcpListener,
    ep: &net::Epoll,
    slots: &mut Vec<Option<Client>>,
) -> io::Result<()> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(true)?;
                stream.set_nodelay(true)?;
                let i = slots
                    .iter()
                    .position(Option::is_none)
                    .unwrap_or(slots.len());
                if i == slots.len() {
                    slots.push(None);
                }
                ep.add(stream.as_raw_fd(), i as u64, false)?;
                slots[i] = Some(Client {
                    conn: Conn::new(stream),
                    persistent_id: None,
                    draining: false,
                    next: 0,
                    inflight: 0,
                    packet_id: 0,
                    watching_out: false,
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads once and answers what came; false when the connection should close.
fn serve_client(
    c: &mut Client,
    sessions: &mut HashSet<String>,
    kept: &mut Vec<Kept>,
) -> io::Result<bool> {
    if let ReadOutcome::Closed = c.conn.fill()? {
        return Ok(false);
    }
    let mut out = Vec::new();
    while let Some((packet, raw)) = c.conn.next_raw()? {
        match packet {
            Packet::Connect => {
                let Some((id, clean)) = connect_fields(raw) else {
                    return Ok(false);
                };
                let present = !clean && sessions.contains(&id);
                if clean {
                    sessions.remove(&id);
                }
                out.extend_from_slice(&[0x20, 2, u8::from(present), 0]);
                c.draining = present;
                c.persistent_id = (!clean).then_some(id);
            }
            Packet::Subscribe { id, list } => {
                let granted: Vec<u8> = wire::filters(list).into_iter().map(|(_, q)| q).collect();
                out.push(0x90);
                wire::put_len(&mut out, 2 + granted.len());
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&granted);
                if let Some(id) = &c.persistent_id {
                    sessions.insert(id.clone());
                }
            }
            Packet::Publish {
                qos: 1, topic, id, ..
            } => {
                wire::ack(&mut out, PUBACK, id);
                let Some(head) = header_len(raw) else {
                    return Ok(false);
                };
                let id_at = head + 2 + topic.len();
                kept.push(Kept {
                    raw: raw.to_vec(),
                    id_at,
                });
            }
            Packet::PubAck(_) => c.inflight = c.inflight.saturating_sub(1),
            Packet::PingReq => out.extend_from_slice(&[0xD0, 0]),
            Packet::Disconnect => return Ok(false),
            _ => return Ok(false),
        }
    }
    c.conn.wbuf.append(&mut out);
    Ok(true)
}

/// Sends the next messages of a returning session while its window has room, then writes
/// what the socket takes, watching for room while some is left; false on a write error.
fn refill_and_flush(i: usize, c: &mut Client, ep: &net::Epoll, kept: &[Kept]) -> io::Result<bool> {
    while c.draining && c.inflight < WINDOW && c.next < kept.len() {
        let k = &kept[c.next];
        c.packet_id = c.packet_id.wrapping_add(1).max(1);
        let at = c.conn.wbuf.len() + k.id_at;
        c.conn.wbuf.extend_from_slice(&k.raw);
        c.conn.wbuf[at..at + 2].copy_from_slice(&c.packet_id.to_be_bytes());
        c.next += 1;
        c.inflight += 1;
    }
    let all_out = c.conn.flush()?;
    if all_out == c.watching_out {
        ep.set_out(c.conn.fd(), i as u64, !all_out)?;
        c.watching_out = !all_out;
    }
    Ok(true)
}

/// The client id and the clean-session flag of a CONNECT (MQTT 3.1 or 3.1.1), from its bytes.
fn connect_fields(raw: &[u8]) -> Option<(String, bool)> {
    let mut at = header_len(raw)?;
    let name_len = u16::from_be_bytes([*raw.get(at)?, *raw.get(at + 1)?]) as usize;
    at += 2 + name_len;
    let flags = *raw.get(at + 1)?;
    at += 4; // level, flags, keep alive
    let id_len = u16::from_be_bytes([*raw.get(at)?, *raw.get(at + 1)?]) as usize;
    let id = raw.get(at + 2..at + 2 + id_len)?;
    Some((String::from_utf8_lossy(id).into_owned(), flags & 0x02 != 0))
}

/// The length of a packet's fixed header: its first byte and the Remaining Length.
fn header_len(raw: &[u8]) -> Option<usize> {
    let mut at = 1;
    while raw.get(at)? & 0x80 != 0 {
        at += 1;
    }
    Some(at + 1)
}
