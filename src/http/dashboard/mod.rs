//! The built-in web dashboard (`dashboard true`): a static page, served from the binary.
//!
//! The page holds no data and no secret: it is an MQTT client (MQTT.js, vendored in
//! `vendor/`) that logs in over MQTT-over-WebSocket on the listener that served it, with the
//! viewer's username and password, and shows what that login may read. So the HTTP side needs
//! no authentication of its own, and the broker's authentication and ACL decide everything.
//!
//! Everything under `/dashboard/` is the dashboard's (a file of `http_dir` there is never
//! served); `/dashboard` redirects to `/dashboard/` so that the page's relative links resolve.
//! The files are embedded with `include_bytes!`; MQTT.js is embedded gzip-compressed and sent
//! with `Content-Encoding: gzip` (every browser accepts it), which keeps the binary small.

use super::Answer;

/// The page and its scripts: no inline script or style, so the policy can forbid both, and
/// the page may connect to its own origin only (WebSocket included, by CSP level 3). MQTT.js
/// runs its keepalive timer in a worker made from a blob (timers of a page in a background
/// tab are throttled to once a minute, which would miss the keepalive).
const POLICY: &str = "Content-Security-Policy: default-src 'none'; script-src 'self'; \
                      style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                      worker-src blob:; base-uri 'none'; form-action 'none'; \
                      frame-ancestors 'none'\r\n\
                      Referrer-Policy: no-referrer\r\n\
                      Cache-Control: no-cache\r\n";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// `body` is gzip-compressed.
    gzip: bool,
}

const ASSETS: [Asset; 4] = [
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("index.html"),
        gzip: false,
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("app.js"),
        gzip: false,
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("app.css"),
        gzip: false,
    },
    Asset {
        name: "mqtt.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("vendor/mqtt.min.js.gz"),
        gzip: true,
    },
];

/// The answer for `path` (`dashboard` or `dashboard/...`, without the leading `/` and the
/// query). `gzip`: the client accepts a gzip-compressed body.
pub(super) fn serve(path: &str, gzip: bool, head_only: bool, close: bool) -> Answer {
    let Some(name) = path.strip_prefix("dashboard/") else {
        // A relative reference (RFC 9110 §10.2.2): right behind a proxy that adds a prefix.
        return Answer::status(301, "Location: dashboard/\r\n", head_only, close);
    };
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return Answer::status(404, "", head_only, close);
    };
    let mut headers = POLICY.to_string();
    if asset.gzip {
        if !gzip {
            return Answer::status(406, "", head_only, close);
        }
        headers.push_str("Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n");
    }
    Answer::ok_with(
        asset.content_type,
        &headers,
        asset.body,
        asset.body.len(),
        head_only,
        close,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(answer: &Answer) -> String {
        String::from_utf8_lossy(&answer.bytes).into_owned()
    }

    #[test]
    fn the_page_lives_under_its_own_directory() {
        let redirect = text(&serve("dashboard", true, false, false));
        assert!(redirect.starts_with("HTTP/1.1 301 Moved Permanently\r\n"));
        assert!(redirect.contains("\r\nLocation: dashboard/\r\n"));
        let page = text(&serve("dashboard/", true, false, false));
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(page.contains("Content-Type: text/html; charset=utf-8\r\n"));
        assert!(page.contains("Content-Security-Policy: default-src 'none'; script-src 'self';"));
        assert!(page.contains("<script src=\"app.js\" defer></script>"));
        assert!(!page.contains("Content-Encoding"));
        let missing = text(&serve("dashboard/secret.txt", true, false, false));
        assert!(missing.starts_with("HTTP/1.1 404 "));
    }

    #[test]
    fn mqtt_js_goes_out_compressed_to_clients_that_take_it() {
        let js = serve("dashboard/mqtt.min.js", true, false, false);
        let head_end = js.bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&js.bytes[..head_end]);
        assert!(head.contains("Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n"));
        // The gzip magic number (RFC 1952 §2.3.1).
        assert_eq!(&js.bytes[head_end..head_end + 2], &[0x1f, 0x8b]);
        let refused = text(&serve("dashboard/mqtt.min.js", false, false, false));
        assert!(refused.starts_with("HTTP/1.1 406 Not Acceptable\r\n"));
        let head_only = serve("dashboard/mqtt.min.js", true, true, false);
        assert!(head_only.bytes.ends_with(b"\r\n\r\n"));
    }
}
