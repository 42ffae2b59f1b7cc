//! `forward-server`: the fastest "broker" possible, to show the load generator is not the
//! bottleneck. No sessions, no queues, no retained messages: it answers CONNECT with CONNACK,
//! SUBSCRIBE with SUBACK (granting what was asked), acknowledges publishes minimally (PUBACK,
//! PUBREC/PUBCOMP, and PUBREL to a subscriber's PUBREC), and copies each PUBLISH's bytes
//! unchanged to every connection whose filter matches. One thread, one `ppoll` loop.

use crate::net::{self, Conn, ReadOutcome};
use crate::wire::{self, Packet, PUBACK, PUBCOMP, PUBREC, PUBREL};
use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// A connection whose unsent output grows past this is dropped (a reader that stopped).
const MAX_PENDING: usize = 64 << 20;

struct Client {
    conn: Conn,
    filters: Vec<Vec<u8>>,
}

/// Serves until killed.
pub fn serve(addr: SocketAddr) -> io::Result<()> {
    net::raise_fd_limit();
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    eprintln!("forward-server listening on {}", listener.local_addr()?);
    let mut slots: Vec<Option<Client>> = Vec::new();
    // Topic -> subscriber slots; rebuilt lazily after any subscribe or disconnect.
    let mut routes: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut fd_slot: Vec<usize> = Vec::new();
    let listen_fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    loop {
        fds.clear();
        fd_slot.clear();
        fds.push(net::pollfd(listen_fd, false));
        for (i, c) in slots.iter().enumerate() {
            if let Some(c) = c {
                fds.push(net::pollfd(c.conn.fd(), c.conn.pending() > 0));
                fd_slot.push(i);
            }
        }
        net::poll(&mut fds, Duration::from_secs(1))?;
        if fds[0].revents != 0 {
            accept_all(&listener, &mut slots)?;
            routes.clear(); // a reused slot must not inherit its predecessor's routes
        }
        for (k, &i) in fd_slot.iter().enumerate() {
            let revents = fds[k + 1].revents;
            if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 {
                continue;
            }
            let Some(mut client) = slots[i].take() else {
                continue;
            };
            match serve_client(i, &mut client, &mut slots, &mut routes) {
                Ok(true) => slots[i] = Some(client),
                Ok(false) | Err(_) => routes.clear(),
            }
        }
        for slot in slots.iter_mut() {
            let Some(c) = slot else { continue };
            if c.conn.pending() == 0 {
                continue;
            }
            if c.conn.flush().is_err() || c.conn.pending() > MAX_PENDING {
                *slot = None;
                routes.clear();
            }
        }
    }
}

fn accept_all(listener: &TcpListener, slots: &mut Vec<Option<Client>>) -> io::Result<()> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(true)?;
                stream.set_nodelay(true)?;
                let client = Client {
                    conn: Conn::new(stream),
                    filters: Vec::new(),
                };
                match slots.iter().position(Option::is_none) {
                    Some(free) => slots[free] = Some(client),
                    None => slots.push(Some(client)),
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors and the like: report and keep serving the others.
                eprintln!("forward-server: accept: {e}");
                return Ok(());
            }
        }
    }
}

/// Reads and handles one client's input; `Ok(false)` when the connection should close.
/// `client` has been taken out of `slots[me]` for the duration.
fn serve_client(
    me: usize,
    client: &mut Client,
    slots: &mut [Option<Client>],
    routes: &mut HashMap<Vec<u8>, Vec<usize>>,
) -> io::Result<bool> {
    let closed = matches!(client.conn.fill()?, ReadOutcome::Closed);
    let mut own = Vec::new();
    let mut new_filters = Vec::new();
    let mut keep = !closed;
    while let Some((packet, raw)) = client.conn.next_raw()? {
        match packet {
            Packet::Connect => own.extend_from_slice(&[0x20, 2, 0, 0]),
            Packet::Subscribe { id, list } => {
                let granted: Vec<u8> = wire::filters(list)
                    .into_iter()
                    .map(|(f, q)| {
                        new_filters.push(f.to_vec());
                        q
                    })
                    .collect();
                own.push(0x90);
                wire::put_len(&mut own, 2 + granted.len());
                own.extend_from_slice(&id.to_be_bytes());
                own.extend_from_slice(&granted);
            }
            Packet::Unsubscribe(id) => own.extend_from_slice(&[0xB0, 2, (id >> 8) as u8, id as u8]),
            Packet::Publish { qos, topic, id, .. } => {
                match qos {
                    1 => wire::ack(&mut own, PUBACK, id),
                    2 => wire::ack(&mut own, PUBREC, id),
                    _ => {}
                }
                if !routes.contains_key(topic) {
                    let targets = route(topic, me, &client.filters, &new_filters, slots);
                    routes.insert(topic.to_vec(), targets);
                }
                for &t in routes.get(topic).map_or(&[][..], Vec::as_slice) {
                    if t == me {
                        own.extend_from_slice(raw);
                    } else if let Some(Some(target)) = slots.get_mut(t) {
                        target.conn.wbuf.extend_from_slice(raw);
                    }
                }
            }
            Packet::PubRel(id) => wire::ack(&mut own, PUBCOMP, id),
            Packet::PubRec(id) => wire::ack(&mut own, PUBREL, id),
            Packet::PubAck(_) | Packet::PubComp(_) | Packet::PingResp => {}
            Packet::PingReq => own.extend_from_slice(&[0xD0, 0]),
            Packet::Disconnect => {
                keep = false;
                break;
            }
            Packet::ConnAck { .. } | Packet::SubAck { .. } | Packet::UnsubAck(_) => {
                keep = false;
                break;
            }
        }
    }
    if !new_filters.is_empty() {
        client.filters.append(&mut new_filters);
        routes.clear();
    }
    client.conn.wbuf.append(&mut own);
    if keep {
        client.conn.flush()?;
    }
    Ok(keep)
}

/// The slots whose filters match `topic`; `me` is the (taken-out) sender with its filters.
fn route(
    topic: &[u8],
    me: usize,
    my_filters: &[Vec<u8>],
    my_new: &[Vec<u8>],
    slots: &[Option<Client>],
) -> Vec<usize> {
    let matches = |fs: &[Vec<u8>]| fs.iter().any(|f| wire::topic_matches(f, topic));
    let mut out: Vec<usize> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.as_ref().filter(|c| matches(&c.filters)).map(|_| i))
        .collect();
    if matches(my_filters) || matches(my_new) {
        out.push(me);
    }
    out
}
