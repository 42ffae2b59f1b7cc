//! The files of `http_dir`, as Mosquitto 2.0 serves them: `/` is `index.html`, a directory is
//! `403` (no listings), a missing file `404`, and nothing outside the directory is reached: the
//! path is decoded first (`%2e%2e` is `..`), a `..` segment is refused, and the file's real
//! path (symbolic links resolved) must lie inside the directory's, compared by path components
//! (Mosquitto compares strings, so `/srv/www2` passed for `/srv/www`).
//!
//! A file is read whole, with a blocking read inside the loop: it is a small local file, and
//! files over [`MAX_FILE`] are refused (`500`, with a warning), so one request never stalls the
//! broker for long or holds much memory.

use super::Answer;
use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The largest file served.
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// The answer for `path` (the request path without its leading `/` and query) under `dir`,
/// which is the real path of `http_dir`.
pub(super) fn serve(dir: &Path, path: &str, head_only: bool, close: bool) -> Answer {
    let Some(decoded) = percent_decode(path.as_bytes()) else {
        return Answer::status(400, "", head_only, close);
    };
    if decoded
        .split(|&b| b == b'/')
        .any(|segment| segment == b"..")
    {
        return Answer::status(403, "", head_only, close);
    }
    // A leading slash (`//etc/passwd`, `%2fetc`) would make the path absolute on its own.
    let start = decoded
        .iter()
        .position(|&b| b != b'/')
        .unwrap_or(decoded.len());
    let relative = &decoded[start..];
    let mut wanted = dir.join(OsStr::from_bytes(relative));
    if decoded.is_empty() || decoded.ends_with(b"/") {
        wanted.push("index.html");
    }
    let real = match wanted.canonicalize() {
        Ok(real) => real,
        Err(e) => return Answer::status(error_status(e.kind()), "", head_only, close),
    };
    if !real.starts_with(dir) {
        return Answer::status(403, "", head_only, close);
    }
    let size = match real.metadata() {
        Ok(m) if m.is_file() => m.len(),
        // A directory (no listings), a device, a pipe.
        Ok(_) => return Answer::status(403, "", head_only, close),
        Err(e) => return Answer::status(error_status(e.kind()), "", head_only, close),
    };
    if size > MAX_FILE {
        log::warn!(
            "Warning: {} is larger than {} MiB; midge does not serve it over HTTP.",
            real.display(),
            MAX_FILE >> 20
        );
        return Answer::status(500, "", head_only, close);
    }
    let content_type = content_type(&wanted);
    if head_only {
        return Answer::ok(content_type, &[], size as usize, true, close);
    }
    match std::fs::read(&real) {
        Ok(body) => Answer::ok(content_type, &body, body.len(), false, close),
        Err(e) => Answer::status(error_status(e.kind()), "", head_only, close),
    }
}

/// The status for a file that could not be opened.
fn error_status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::NotFound | ErrorKind::NotADirectory => 404,
        ErrorKind::PermissionDenied => 403,
        ErrorKind::InvalidFilename => 414,
        _ => 500,
    }
}

/// `%XX` escapes decoded (RFC 3986 §2.1); `None` for a broken escape or a NUL byte.
fn percent_decode(path: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = match path[i] {
            b'%' => {
                let hex = path.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                i += 2;
                u8::from_str_radix(hex, 16).ok()?
            }
            b => b,
        };
        if b == 0 {
            return None;
        }
        out.push(b);
        i += 1;
    }
    Some(out)
}

/// The content type of a file, by its extension.
fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(OsStr::to_str)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_decoded_and_broken_ones_refused() {
        assert_eq!(
            percent_decode(b"a%2e%2E/b%20c").as_deref(),
            Some(&b"a../b c"[..])
        );
        assert_eq!(percent_decode(b"%2"), None);
        assert_eq!(percent_decode(b"%zz"), None);
        assert_eq!(percent_decode(b"a%00"), None);
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(
            content_type(Path::new("/a/index.HTML")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("/a/app.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("/a/README")),
            "application/octet-stream"
        );
    }
}
