//! HTTP on WebSocket listeners: the requests that are not WebSocket upgrades.
//!
//! Every connection to a `protocol websockets` listener starts with an HTTP request. An
//! upgrade goes on to WebSocket (`transport::ws`). Any other request is answered here when the
//! listener asks for it, with the files of `http_dir` (as Mosquitto 2.0 does) and midge's
//! built-in pages (`metrics true`: `/metrics`); a listener with neither refuses it with `400`,
//! as before. Built-in pages win over files of the same name: with `metrics true`, `/metrics`
//! is never looked up in `http_dir`.
//!
//! Requests are parsed with httparse inside the loop, like every other byte. A request head is
//! bounded in size (the 16 KiB of an upgrade request; more is `431`) and in time: the broker
//! ends any connection that sent no CONNECT within `connect_timeout`, whatever it spoke, so a
//! slow (or idle keep-alive) HTTP client is closed like a slow MQTT one. Only GET and HEAD are
//! served (`405` otherwise), without a body. Answers carry a Content-Length, so the connection
//! stays open for the next request (pipelined ones are answered in order) unless the client
//! asked otherwise, the request was not understood, or answers already wait for the socket:
//! then the answer says `Connection: close` and the connection closes once it is written, so a
//! pipelining client cannot pile up answers in memory.

mod files;

use crate::auth::base64;
use crate::config::HttpOptions;
use std::path::PathBuf;
use std::sync::Arc;

/// Headers read per request; a browser sends about twenty.
const MAX_HEADERS: usize = 64;

/// What a listener serves over HTTP, shared by its connections.
#[derive(Debug)]
pub(crate) struct Site {
    /// `http_dir`, resolved (symbolic links too) when the listener opened.
    dir: Option<PathBuf>,
    metrics: bool,
    metrics_auth: bool,
}

impl Site {
    /// The site of a listener with these options; `None` when it serves nothing. An `http_dir`
    /// that is no readable directory stops start-up.
    pub(crate) fn open(options: &HttpOptions) -> Result<Option<Arc<Site>>, String> {
        if !options.serves() {
            return Ok(None);
        }
        let dir = match &options.dir {
            Some(dir) => {
                let real = dir
                    .canonicalize()
                    .map_err(|e| format!("Unable to open http_dir \"{}\": {e}", dir.display()))?;
                std::fs::read_dir(&real)
                    .map_err(|e| format!("Unable to open http_dir \"{}\": {e}", dir.display()))?;
                Some(real)
            }
            None => None,
        };
        Ok(Some(Arc::new(Site {
            dir,
            metrics: options.metrics,
            metrics_auth: options.metrics_auth,
        })))
    }

    /// The answer to a request that is not a WebSocket upgrade. `answers_waiting`: earlier
    /// answers still wait for the socket, so this one ends the connection.
    pub(crate) fn answer(
        &self,
        head: &Head,
        pages: &mut (impl Pages + ?Sized),
        answers_waiting: bool,
    ) -> Answer {
        let close = !head.keep_alive || answers_waiting;
        let head_only = match head.method.as_str() {
            "GET" => false,
            "HEAD" => true,
            // The body of a POST or PUT would follow: the connection cannot go on.
            _ => return Answer::status(405, "Allow: GET, HEAD\r\n", false, true),
        };
        if head.body {
            return Answer::status(400, "", head_only, true);
        }
        // Origin form only ("/path?query"); the query means nothing to a file or a page.
        let Some(path) = head
            .target
            .strip_prefix('/')
            .map(|p| p.split(['?', '#']).next().unwrap_or(""))
        else {
            return Answer::status(400, "", head_only, true);
        };
        if self.metrics && path == "metrics" {
            return self.metrics_page(head, pages, head_only, close);
        }
        match &self.dir {
            Some(dir) => files::serve(dir, path, head_only, close),
            None => Answer::status(404, "", head_only, close),
        }
    }

    /// `/metrics`, behind HTTP Basic authentication unless `metrics_auth false`.
    fn metrics_page(
        &self,
        head: &Head,
        pages: &mut (impl Pages + ?Sized),
        head_only: bool,
        close: bool,
    ) -> Answer {
        if self.metrics_auth {
            let admitted = head
                .authorization
                .as_deref()
                .and_then(basic_credentials)
                .is_some_and(|(user, password)| pages.login(&user, &password));
            if !admitted {
                // RFC 7617: the scheme, the realm, and that credentials are read as UTF-8.
                let challenge = "WWW-Authenticate: Basic realm=\"midge\", charset=\"UTF-8\"\r\n";
                return Answer::status(401, challenge, head_only, close);
            }
        }
        let mut body = String::new();
        pages.metrics(&mut body);
        // The Prometheus text exposition format, version 0.0.4.
        Answer::ok(
            "text/plain; version=0.0.4; charset=utf-8",
            body.as_bytes(),
            body.len(),
            head_only,
            close,
        )
    }
}

/// What the built-in pages need from the broker.
pub(crate) trait Pages {
    /// True when `username` and `password` log in on this connection's listener as they would
    /// in a CONNECT.
    fn login(&mut self, username: &str, password: &[u8]) -> bool;
    /// Appends the broker's figures in Prometheus text format.
    fn metrics(&mut self, out: &mut String);
}

/// A request head, as far as midge reads it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Head {
    /// Bytes of the head, up to and including its blank line.
    pub(crate) len: usize,
    method: String,
    target: String,
    /// The client will send another request on this connection.
    keep_alive: bool,
    /// `Upgrade: websocket`: for `transport::ws`, not for this module.
    pub(crate) upgrade: bool,
    /// The `Authorization` header.
    authorization: Option<String>,
    /// A body follows the head.
    body: bool,
}

/// Reads a request head from the start of `buf`: `Ok(None)` while it is incomplete, an
/// answer (`400`, `431`) that ends the connection when it cannot be read.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<Head>, Answer> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(too_large()),
        Err(_) => return Err(Answer::status(400, "", false, true)),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Answer::status(400, "", false, true));
    };
    // HTTP/1.1 keeps the connection by default, HTTP/1.0 closes it (RFC 9112 §9.3).
    let mut keep_alive = version == 1;
    let mut upgrade = false;
    let mut authorization = None;
    let mut body = false;
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        let tokens = || value.split(',').map(str::trim);
        if h.name.eq_ignore_ascii_case("connection") {
            if tokens().any(|t| t.eq_ignore_ascii_case("close")) {
                keep_alive = false;
            } else if tokens().any(|t| t.eq_ignore_ascii_case("keep-alive")) {
                keep_alive = true;
            }
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade |= tokens().any(|t| t.eq_ignore_ascii_case("websocket"));
        } else if h.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.into_owned());
        } else if h.name.eq_ignore_ascii_case("content-length") {
            match value.trim().parse::<u64>() {
                Ok(n) => body |= n > 0,
                Err(_) => return Err(Answer::status(400, "", false, true)),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            body = true;
        }
    }
    Ok(Some(Head {
        len,
        method: method.to_string(),
        target: target.to_string(),
        keep_alive,
        upgrade,
        authorization,
        body,
    }))
}

/// The answer to a request head larger than midge reads.
pub(crate) fn too_large() -> Answer {
    Answer::status(431, "", false, true)
}

/// `Basic BASE64(user:password)` (RFC 7617), as a username and a password.
fn basic_credentials(header: &str) -> Option<(String, Vec<u8>)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// An HTTP answer, ready to write.
#[derive(Debug)]
pub(crate) struct Answer {
    /// Status line, headers and body.
    pub(crate) bytes: Vec<u8>,
    /// The connection ends once the answer is written.
    pub(crate) close: bool,
}

impl Answer {
    /// `200 OK` with a body of `len` bytes (`body` is empty for HEAD).
    fn ok(content_type: &str, body: &[u8], len: usize, head_only: bool, close: bool) -> Answer {
        let headers =
            format!("Content-Type: {content_type}\r\nX-Content-Type-Options: nosniff\r\n");
        Answer::new(200, &headers, body, len, head_only, close)
    }

    /// An answer that is only its status, with a short text body saying it.
    fn status(code: u16, headers: &str, head_only: bool, close: bool) -> Answer {
        let text = format!("{code} {}\n", reason(code));
        let headers = format!("{headers}Content-Type: text/plain; charset=utf-8\r\n");
        Answer::new(
            code,
            &headers,
            text.as_bytes(),
            text.len(),
            head_only,
            close,
        )
    }

    fn new(
        code: u16,
        headers: &str,
        body: &[u8],
        len: usize,
        head_only: bool,
        close: bool,
    ) -> Answer {
        let connection = if close { "close" } else { "keep-alive" };
        let mut bytes = format!(
            "HTTP/1.1 {code} {}\r\nServer: midge\r\n{headers}Content-Length: {len}\r\n\
             Connection: {connection}\r\n\r\n",
            reason(code)
        )
        .into_bytes();
        if !head_only {
            bytes.extend_from_slice(body);
        }
        Answer { bytes, close }
    }
}

/// The reason phrase of the status codes midge sends.
fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeBroker {
        logins: Vec<(String, Vec<u8>)>,
    }

    impl Pages for FakeBroker {
        fn login(&mut self, username: &str, password: &[u8]) -> bool {
            self.logins.push((username.to_string(), password.to_vec()));
            username == "alice" && password == b"secret"
        }

        fn metrics(&mut self, out: &mut String) {
            out.push_str("midge_up 1\n");
        }
    }

    fn head(request: &str) -> Head {
        match parse(request.as_bytes()) {
            Ok(Some(head)) => head,
            other => panic!("{request:?}: {other:?}"),
        }
    }

    fn text(answer: &Answer) -> String {
        String::from_utf8_lossy(&answer.bytes).into_owned()
    }

    fn metrics_site(auth: bool) -> Site {
        Site {
            dir: None,
            metrics: true,
            metrics_auth: auth,
        }
    }

    #[test]
    fn a_head_is_read_once_complete() {
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None)));
        let h = head("GET /a?b HTTP/1.1\r\nHost: x\r\n\r\nGET /next");
        assert_eq!(h.len, "GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n".len());
        assert!(h.keep_alive && !h.upgrade && !h.body);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.1\r\nUpgrade: WebSocket\r\n\r\n").upgrade);
        assert!(head("GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\n").body);
        assert!(!head("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").body);
    }

    #[test]
    fn unreadable_heads_end_the_connection() {
        for bad in [
            "GET\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            "\x01\r\n\r\n",
        ] {
            let Err(answer) = parse(bad.as_bytes()) else {
                panic!("{bad:?} parsed");
            };
            assert!(
                text(&answer).starts_with("HTTP/1.1 400 Bad Request\r\n"),
                "{bad:?}"
            );
            assert!(answer.close);
        }
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X-A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        let Err(answer) = parse(many.as_bytes()) else {
            panic!("parsed");
        };
        assert!(text(&answer).starts_with("HTTP/1.1 431 "));
    }

    #[test]
    fn only_get_and_head_are_served() {
        let site = metrics_site(false);
        let mut broker = FakeBroker { logins: vec![] };
        let post = site.answer(&head("POST /metrics HTTP/1.1\r\n\r\n"), &mut broker, false);
        assert!(text(&post).starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text(&post).contains("\r\nAllow: GET, HEAD\r\n") && post.close);
        let get = site.answer(
            &head("GET /metrics?x=1 HTTP/1.1\r\n\r\n"),
            &mut broker,
            false,
        );
        assert!(
            text(&get).ends_with("\r\n\r\nmidge_up 1\n"),
            "{}",
            text(&get)
        );
        assert!(text(&get).contains("Content-Length: 11\r\nConnection: keep-alive\r\n"));
        let head_only = site.answer(&head("HEAD /metrics HTTP/1.1\r\n\r\n"), &mut broker, false);
        assert!(text(&head_only).ends_with("Content-Length: 11\r\nConnection: keep-alive\r\n\r\n"));
        // Without `http_dir`, there is nothing else.
        let other = site.answer(
            &head("GET /index.html HTTP/1.1\r\n\r\n"),
            &mut broker,
            false,
        );
        assert!(text(&other).starts_with("HTTP/1.1 404 Not Found\r\n"));
        // Answers waiting: this one closes.
        let last = site.answer(&head("GET /metrics HTTP/1.1\r\n\r\n"), &mut broker, true);
        assert!(last.close && text(&last).contains("Connection: close\r\n"));
    }

    #[test]
    fn metrics_want_basic_credentials_of_a_user() {
        let site = metrics_site(true);
        let mut broker = FakeBroker { logins: vec![] };
        let ask = |auth: &str| format!("GET /metrics HTTP/1.1\r\n{auth}\r\n");
        let none = site.answer(&head(&ask("")), &mut broker, false);
        assert!(text(&none).starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(text(&none).contains("WWW-Authenticate: Basic realm=\"midge\""));
        let good = format!(
            "Authorization: Basic {}\r\n",
            base64::encode(b"alice:secret")
        );
        let ok = site.answer(&head(&ask(&good)), &mut broker, false);
        assert!(text(&ok).starts_with("HTTP/1.1 200 OK\r\n"));
        let bad = format!(
            "Authorization: Basic {}\r\n",
            base64::encode(b"alice:guess")
        );
        let refused = site.answer(&head(&ask(&bad)), &mut broker, false);
        assert!(text(&refused).starts_with("HTTP/1.1 401 "));
        // A password may hold colons; only the first one separates it from the username.
        assert_eq!(
            basic_credentials(&format!("basic {}", base64::encode(b"u:a:b"))),
            Some(("u".to_string(), b"a:b".to_vec()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(broker.logins.len(), 2);
    }
}
