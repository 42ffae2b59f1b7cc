//! Password files in the format of Mosquitto's `mosquitto_passwd`: reading them for the broker's
//! `password_file`, and writing lines that Mosquitto 2.0 itself can read.
//!
//! One user per line, `#` comments and blank lines allowed:
//!
//! ```text
//! <username>:$7$<iterations>$<base64 salt>$<base64 hash>   PBKDF2-HMAC-SHA512 (Mosquitto 2.0 default)
//! <username>:$6$<base64 salt>$<base64 hash>                SHA-512(password || salt), Mosquitto ≤ 1.6
//! ```
//!
//! The hash is always 64 bytes (88 base64 characters). `mosquitto_passwd` 2.0 writes 12-byte salts
//! (16 base64 characters) and 101 iterations; Mosquitto 2.1 writes 64-byte salts, so any salt
//! length is accepted here. 2.1's default `$argon2id$…` lines cannot be verified by midge: such a
//! line is reported, and that user cannot log in.
//!
//! Loading never fails because of one bad line: each malformed line gives a warning naming the
//! file and line, that user cannot log in, and the other users still load. The key derivation is
//! RustCrypto's `pbkdf2`/`sha2`; only the comparison of the derived hash (constant time) and the
//! base64 text encoding are written here.
//!
//! This module owns the file format and verification only. It does not log, does not know about
//! CONNECT packets, and is not told which listener asks: the broker decides when to call
//! [`PasswordFile::check`] and what to do with the warnings.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

use sha2::{Digest, Sha512};

use super::base64;

/// Iterations `mosquitto_passwd` 2.0 uses for `$7$` hashes unless `-I` says otherwise.
pub const DEFAULT_ITERATIONS: u32 = 101;
/// Salt length `mosquitto_passwd` 2.0 writes. Mosquitto 2.0's broker accepts only this length,
/// so files midge writes use it too.
pub const SALT_LEN: usize = 12;
/// Length of the derived hash for both `$6$` (SHA-512 output) and `$7$` (PBKDF2 key length).
pub(crate) const HASH_LEN: usize = 64;

/// The hash algorithms of `mosquitto_passwd -H`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashType {
    /// `$6$`: one SHA-512 over password then salt (`-H sha512`, for Mosquitto ≤ 1.6).
    Sha512,
    /// `$7$`: PBKDF2-HMAC-SHA512 (`-H sha512-pbkdf2`, the default).
    Sha512Pbkdf2,
}

impl HashType {
    /// Parses a `-H` argument: `sha512` or `sha512-pbkdf2`.
    pub fn from_name(name: &str) -> Option<HashType> {
        match name {
            "sha512" => Some(HashType::Sha512),
            "sha512-pbkdf2" => Some(HashType::Sha512Pbkdf2),
            _ => None,
        }
    }
}

/// How the stored hash was derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Sha512,
    Pbkdf2 { iterations: u32 },
}

/// One decoded password hash: scheme, salt and the 64-byte derived value.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    scheme: Scheme,
    salt: Vec<u8>,
    hash: [u8; HASH_LEN],
}

/// Why the hash field of a password line cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HashError {
    /// No leading `$`: a plain-text password (Mosquitto accepts those only when built without TLS).
    NotHashed,
    /// A `$<id>$` that midge cannot verify, such as Mosquitto 2.1's `argon2id`.
    UnsupportedType(String),
    /// Wrong number of `$`-separated fields for the type.
    WrongFieldCount {
        type_id: &'static str,
        expected: usize,
        found: usize,
    },
    /// The iteration count of a `$7$` line is not a whole number ≥ 1.
    BadIterations(String),
    /// The salt decodes to nothing.
    EmptySalt,
    /// The salt or the hash is not valid base64.
    BadBase64 {
        field: &'static str,
        error: base64::DecodeError,
    },
    /// The hash does not decode to 64 bytes.
    WrongHashLength(usize),
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashError::NotHashed => f.write_str(
                "the password is not hashed (plain text); hash the file with `midge_passwd -U`",
            ),
            HashError::UnsupportedType(id) if id.starts_with("argon2") => write!(
                f,
                "the password uses hash type \"{id}\" (Mosquitto 2.1's default), which midge cannot \
                 verify; set it again with midge_passwd or `mosquitto_passwd -H sha512-pbkdf2`"
            ),
            HashError::UnsupportedType(id) => write!(
                f,
                "unknown password hash type \"${id}$\", which midge cannot verify (only $6$ and $7$)"
            ),
            HashError::WrongFieldCount { type_id, expected, found } => write!(
                f,
                "a {type_id} hash needs {expected} '$'-separated fields after the type, found {found}"
            ),
            HashError::BadIterations(text) => {
                write!(f, "the iteration count \"{text}\" is not a whole number of at least 1")
            }
            HashError::EmptySalt => f.write_str("the salt is empty"),
            HashError::BadBase64 { field, error } => write!(f, "the {field} is not base64: {error}"),
            HashError::WrongHashLength(len) => {
                write!(f, "the hash decodes to {len} bytes instead of {HASH_LEN}")
            }
        }
    }
}

impl std::error::Error for HashError {}

impl PasswordHash {
    /// Parses the part of a password line after `username:`, e.g. `$7$101$<salt>$<hash>`.
    pub(crate) fn parse(field: &str) -> Result<PasswordHash, HashError> {
        let rest = field.strip_prefix('$').ok_or(HashError::NotHashed)?;
        let mut parts = rest.split('$');
        let type_id = parts.next().unwrap_or_default();
        let fields: Vec<&str> = parts.collect();
        let (scheme, salt, hash) = match type_id {
            "6" => match fields[..] {
                [salt, hash] => (Scheme::Sha512, salt, hash),
                _ => {
                    return Err(HashError::WrongFieldCount {
                        type_id: "$6$",
                        expected: 2,
                        found: fields.len(),
                    })
                }
            },
            "7" => match fields[..] {
                [iterations, salt, hash] => {
                    let iterations = iterations
                        .parse::<u32>()
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| HashError::BadIterations(iterations.to_string()))?;
                    (Scheme::Pbkdf2 { iterations }, salt, hash)
                }
                _ => {
                    return Err(HashError::WrongFieldCount {
                        type_id: "$7$",
                        expected: 3,
                        found: fields.len(),
                    })
                }
            },
            other => return Err(HashError::UnsupportedType(other.to_string())),
        };
        let salt = base64::decode(salt).map_err(|error| HashError::BadBase64 {
            field: "salt",
            error,
        })?;
        if salt.is_empty() {
            return Err(HashError::EmptySalt);
        }
        let hash = base64::decode(hash).map_err(|error| HashError::BadBase64 {
            field: "hash",
            error,
        })?;
        let hash: [u8; HASH_LEN] = hash
            .try_into()
            .map_err(|h: Vec<u8>| HashError::WrongHashLength(h.len()))?;
        Ok(PasswordHash { scheme, salt, hash })
    }

    /// Hashes `password` with a fresh random salt of [`SALT_LEN`] bytes from `/dev/urandom`.
    /// `iterations` is used by [`HashType::Sha512Pbkdf2`] only.
    pub fn generate(
        hash_type: HashType,
        password: &[u8],
        iterations: u32,
    ) -> io::Result<PasswordHash> {
        let mut salt = [0u8; SALT_LEN];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut salt)?;
        Ok(PasswordHash::with_salt(
            hash_type, password, &salt, iterations,
        ))
    }

    /// Hashes `password` with the given salt (deterministic: for tests and known-answer checks).
    /// An `iterations` of 0 is treated as 1.
    pub(crate) fn with_salt(
        hash_type: HashType,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> PasswordHash {
        let scheme = match hash_type {
            HashType::Sha512 => Scheme::Sha512,
            HashType::Sha512Pbkdf2 => Scheme::Pbkdf2 {
                iterations: iterations.max(1),
            },
        };
        let hash = derive(scheme, password, salt);
        PasswordHash {
            scheme,
            salt: salt.to_vec(),
            hash,
        }
    }

    /// Whether `password` derives to the stored hash. The comparison takes the same time
    /// wherever the first differing byte is.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        constant_time_eq(&derive(self.scheme, password, &self.salt), &self.hash)
    }

    /// A PBKDF2-SHA512 hash from its stored parts, as Mosquitto's dynamic-security file keeps
    /// them (base64 `password` and `salt`, integer `iterations`).
    pub(crate) fn pbkdf2_from_parts(
        iterations: u32,
        salt: Vec<u8>,
        hash: [u8; HASH_LEN],
    ) -> PasswordHash {
        PasswordHash {
            scheme: Scheme::Pbkdf2 { iterations },
            salt,
            hash,
        }
    }

    /// The salt the hash was derived with.
    pub(crate) fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The derived 64-byte value.
    pub(crate) fn hash(&self) -> &[u8; HASH_LEN] {
        &self.hash
    }

    /// The iteration count of a `$7$` hash; `None` for `$6$`.
    pub fn iterations(&self) -> Option<u32> {
        match self.scheme {
            Scheme::Sha512 => None,
            Scheme::Pbkdf2 { iterations } => Some(iterations),
        }
    }
}

/// Formats the hash as it appears after `username:` (`$7$101$<salt>$<hash>` or `$6$<salt>$<hash>`).
impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (salt, hash) = (base64::encode(&self.salt), base64::encode(&self.hash));
        match self.scheme {
            Scheme::Sha512 => write!(f, "$6${salt}${hash}"),
            Scheme::Pbkdf2 { iterations } => write!(f, "$7${iterations}${salt}${hash}"),
        }
    }
}

/// Never prints the salt or hash: a `{:?}` in a log line must not leak them.
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHash")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

fn derive(scheme: Scheme, password: &[u8], salt: &[u8]) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    match scheme {
        Scheme::Sha512 => out.copy_from_slice(
            &Sha512::new()
                .chain_update(password)
                .chain_update(salt)
                .finalize(),
        ),
        Scheme::Pbkdf2 { iterations } => {
            pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out)
        }
    }
    out
}

/// Equal-length comparison whose running time does not depend on where the slices differ:
/// every byte pair is XORed and the differences ORed together before the single test.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A loaded password file: who may log in, with which hash. Equality lets a SIGHUP reload tell
/// whether anything changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PasswordFile {
    /// `None`: the user's line was malformed or unsupported, so that user cannot log in. Shared
    /// so a connection can keep the entry it logged in with (see [`PasswordFile::verify`]).
    users: HashMap<String, Option<Rc<PasswordHash>>>,
}

impl PasswordFile {
    /// Reads and parses the file at `path`. Only failing to read the file is an error; problems
    /// with single lines come back as warnings (`file:line: …`), one per line.
    pub fn load(path: impl AsRef<Path>) -> io::Result<(PasswordFile, Vec<String>)> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)?;
        Ok(PasswordFile::parse(
            &path.display().to_string(),
            &String::from_utf8_lossy(&bytes),
        ))
    }

    /// Parses password file text; `source` names the file in warnings.
    pub(crate) fn parse(source: &str, text: &str) -> (PasswordFile, Vec<String>) {
        let mut file = PasswordFile::default();
        let mut warnings = Vec::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((username, field)) = line.split_once(':') else {
                warnings.push(format!(
                    "{source}:{line_no}: no ':' between user name and password hash; line ignored"
                ));
                continue;
            };
            let username = username.trim();
            if username.is_empty() {
                warnings.push(format!("{source}:{line_no}: empty user name; line ignored"));
                continue;
            }
            if let Some(first) = first_line.get(username) {
                warnings.push(format!(
                    "{source}:{line_no}: user \"{username}\" already defined at line {first}; \
                     this line is ignored"
                ));
                continue;
            }
            first_line.insert(username.to_string(), line_no);
            let hash = match PasswordHash::parse(field.trim()) {
                Ok(hash) => Some(Rc::new(hash)),
                Err(error) => {
                    warnings.push(format!(
                        "{source}:{line_no}: user \"{username}\": {error}; \
                         this user cannot log in"
                    ));
                    None
                }
            };
            file.users.insert(username.to_string(), hash);
        }
        (file, warnings)
    }

    /// Whether `username` is in the file with a usable hash that `password` matches.
    pub fn check(&self, username: &str, password: &[u8]) -> bool {
        self.verify(username, password).is_some()
    }

    /// The entry `password` verified against, if `username` is in the file with a usable hash
    /// that `password` matches. The broker keeps it for the life of the connection instead of
    /// the password: after a reload, [`PasswordFile::still_valid`] tells whether the entry is
    /// unchanged.
    ///
    /// An unknown user costs the same work as a known one (a hash with the default parameters is
    /// derived and thrown away), so response times do not tell which user names exist.
    pub(crate) fn verify(&self, username: &str, password: &[u8]) -> Option<Rc<PasswordHash>> {
        match self.users.get(username) {
            Some(Some(hash)) => hash.verify(password).then(|| Rc::clone(hash)),
            _ => {
                let decoy = PasswordHash::with_salt(
                    HashType::Sha512Pbkdf2,
                    password,
                    &[0u8; SALT_LEN],
                    DEFAULT_ITERATIONS,
                );
                std::hint::black_box(decoy);
                None
            }
        }
    }

    /// Whether `username` still has exactly the entry `verified` (salt, hash and parameters), so
    /// the password it was verified with still verifies. A changed entry counts as invalid even
    /// if the password is the same (a re-hash gives a new salt): without the password itself,
    /// which midge does not keep, that cannot be told apart from a new password.
    pub(crate) fn still_valid(&self, username: &str, verified: &PasswordHash) -> bool {
        matches!(self.users.get(username), Some(Some(hash)) if **hash == *verified)
    }

    /// The users that can log in (their line parsed), sorted by name.
    pub fn users(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .users
            .iter()
            .filter(|(_, hash)| hash.is_some())
            .map(|(name, _)| name.as_str())
            .collect();
        names.sort_unstable();
        names
    }
}

// ---- Editing password file text (used by `midge_passwd`) ----
//
// Like `mosquitto_passwd`, edits keep every other line byte for byte and replace only the lines
// of the user being changed.

/// The user name of a password file line, or `None` for blank and comment lines.
fn line_username(line: &str) -> Option<&str> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    Some(
        trimmed
            .split_once(':')
            .map_or(trimmed, |(user, _)| user)
            .trim(),
    )
}

/// Why a user name cannot be written to a password file (`mosquitto_passwd`'s rules).
pub fn check_username(username: &str) -> Result<(), String> {
    if username.is_empty() {
        return Err("Username must not be empty.".into());
    }
    if username.len() > 65535 {
        return Err("Username must be less than 65536 characters long.".into());
    }
    if username.chars().any(char::is_control) {
        return Err("Username must not contain control characters.".into());
    }
    if username.contains(':') {
        return Err("Username must not contain the ':' character.".into());
    }
    Ok(())
}

/// `username:hash` as a file line, without the newline.
pub fn format_line(username: &str, hash: &PasswordHash) -> String {
    format!("{username}:{hash}")
}

/// Sets `username`'s entry to `new_line`: the first line of that user is replaced, any further
/// lines of the same user are dropped, and the user is appended when absent.
pub fn set_user(text: &str, username: &str, new_line: &str) -> String {
    let mut out = String::with_capacity(text.len() + new_line.len() + 1);
    let mut replaced = false;
    for line in text.lines() {
        if line_username(line) == Some(username) {
            if !replaced {
                out.push_str(new_line);
                out.push('\n');
                replaced = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str(new_line);
        out.push('\n');
    }
    out
}

/// Removes every line of `username`; `None` when the user is not in the file.
pub fn delete_user(text: &str, username: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    for line in text.lines() {
        if line_username(line) == Some(username) {
            found = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    found.then_some(out)
}

/// Replaces each `user:plaintext` line by `user:<hash>` (what `mosquitto_passwd -U` does),
/// calling `hash` on each password. Comments and blank lines are kept.
///
/// Unlike `mosquitto_passwd`, a line whose password already looks hashed (`$6$`/`$7$`) is an
/// error instead of being hashed again, since running `-U` twice would lock every user out.
/// Errors name the line (`line N: …`).
pub fn hash_plaintext<F>(text: &str, mut hash: F) -> Result<String, String>
where
    F: FnMut(&[u8]) -> io::Result<PasswordHash>,
{
    let mut out = String::with_capacity(text.len() * 4);
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line_username(line).is_none() {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let (username, password) = match line.trim().split_once(':') {
            Some((u, p)) if !u.trim().is_empty() && !p.trim().is_empty() => (u.trim(), p.trim()),
            _ => return Err(format!("line {line_no}: expected \"user:password\"")),
        };
        if PasswordHash::parse(password).is_ok() {
            return Err(format!(
                "line {line_no}: the password of user \"{username}\" is already hashed; \
                 not hashing it twice"
            ));
        }
        let hashed = hash(password.as_bytes()).map_err(|e| format!("line {line_no}: {e}"))?;
        out.push_str(&format_line(username, &hashed));
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A password file line's hash field, as `mosquitto_passwd` 2.0 writes it by default.
    fn hash_password(password: &[u8], iterations: u32) -> io::Result<String> {
        Ok(PasswordHash::generate(HashType::Sha512Pbkdf2, password, iterations)?.to_string())
    }

    /// Made with Debian's mosquitto_passwd 2.0.11: `mosquitto_passwd -c -b f alice secret`.
    const MOSQUITTO_ALICE: &str = "alice:$7$101$DunHo8i4HQMag2Bn$N2X3hPZr6bjZfX254C9CGh1AdIf5pfty3jlSK54qLq5QoItKUCrVrqZSudh5JjzVxuem2KbQpvX3lgyNq0i/ZA==";

    fn parse(text: &str) -> (PasswordFile, Vec<String>) {
        PasswordFile::parse("pw", text)
    }

    #[test]
    fn verifies_a_line_written_by_mosquitto_passwd() {
        let (file, warnings) = parse(MOSQUITTO_ALICE);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(file.check("alice", b"secret"));
        assert!(!file.check("alice", b"Secret"));
        assert!(!file.check("alice", b""));
        assert!(!file.check("bob", b"secret"));
        assert_eq!(file.users(), ["alice"]);
    }

    #[test]
    fn the_verified_entry_stays_valid_until_its_line_changes() {
        let (file, _) = parse(MOSQUITTO_ALICE);
        let entry = file.verify("alice", b"secret").unwrap();
        assert!(file.verify("alice", b"wrong").is_none());
        // The same file read again: the same entry.
        let (reloaded, _) = parse(&format!("# a comment\n{MOSQUITTO_ALICE}\n"));
        assert!(reloaded.still_valid("alice", &entry));
        // alice removed, or her line broken: invalid.
        let (removed, _) = parse("bob:$6$c2FsdA==$AAAA");
        assert!(!removed.still_valid("alice", &entry));
        let (broken, _) = parse("alice:$7$101$notbase64!$x");
        assert!(!broken.still_valid("alice", &entry));
        // The same password hashed again has a new salt: invalid (midge keeps no password).
        let rehashed = format!(
            "alice:{}",
            hash_password(b"secret", DEFAULT_ITERATIONS).unwrap()
        );
        let (rehashed, _) = parse(&rehashed);
        assert!(rehashed.check("alice", b"secret"));
        assert!(!rehashed.still_valid("alice", &entry));
        // Another user with alice's line does not inherit her login.
        let (renamed, _) = parse(&MOSQUITTO_ALICE.replacen("alice", "carol", 1));
        assert!(!renamed.still_valid("alice", &entry));
    }

    #[test]
    fn pbkdf2_known_answer_rfc_style_vector() {
        // PBKDF2-HMAC-SHA512("password", "salt", 1, 64): the published test vector.
        let hash = PasswordHash::with_salt(HashType::Sha512Pbkdf2, b"password", b"salt", 1);
        let hex: String = hash.hash.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252\
             c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce"
        );
    }

    #[test]
    fn sha512_scheme_is_hash_of_password_then_salt() {
        let hash = PasswordHash::with_salt(HashType::Sha512, b"pass", b"salt", 0);
        let expected = Sha512::digest(b"passsalt");
        assert_eq!(&hash.hash[..], &expected[..]);
        let line = format!("u:{hash}");
        assert!(line.starts_with("u:$6$c2FsdA==$"));
        let (file, warnings) = parse(&line);
        assert!(warnings.is_empty());
        assert!(file.check("u", b"pass"));
        assert!(!file.check("u", b"pasS"));
    }

    #[test]
    fn generated_hash_has_mosquitto_2_0_shape() {
        let text = hash_password(b"pw", DEFAULT_ITERATIONS).unwrap();
        let fields: Vec<&str> = text.split('$').collect();
        assert_eq!(fields[..3], ["", "7", "101"]);
        assert_eq!(fields[3].len(), 16, "12-byte salt → 16 base64 chars");
        assert_eq!(fields[4].len(), 88, "64-byte hash → 88 base64 chars");
        assert!(PasswordHash::parse(&text).unwrap().verify(b"pw"));
        assert_ne!(
            text,
            hash_password(b"pw", DEFAULT_ITERATIONS).unwrap(),
            "salt is random"
        );
    }

    #[test]
    fn iterations_are_read_from_the_line() {
        let hash = PasswordHash::generate(HashType::Sha512Pbkdf2, b"pw", 1000).unwrap();
        let text = hash.to_string();
        assert!(text.starts_with("$7$1000$"));
        let parsed = PasswordHash::parse(&text).unwrap();
        assert_eq!(parsed.iterations(), Some(1000));
        assert!(parsed.verify(b"pw"));
    }

    #[test]
    fn accepts_64_byte_salts_as_mosquitto_2_1_writes() {
        let salt = [7u8; 64];
        let hash = PasswordHash::with_salt(HashType::Sha512Pbkdf2, b"pw", &salt, 5);
        let (file, warnings) = parse(&format!("carol:{hash}\n"));
        assert!(warnings.is_empty());
        assert!(file.check("carol", b"pw"));
    }

    #[test]
    fn argon2id_line_is_reported_and_that_user_cannot_log_in() {
        let text =
            format!("dave:$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$aGFzaA\n{MOSQUITTO_ALICE}\n");
        let (file, warnings) = parse(&text);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("pw:1: user \"dave\""),
            "{}",
            warnings[0]
        );
        assert!(warnings[0].contains("argon2id") && warnings[0].contains("cannot verify"));
        assert!(!file.check("dave", b"anything"));
        assert!(file.check("alice", b"secret"));
        assert_eq!(file.users(), ["alice"]);
    }

    #[test]
    fn malformed_lines_warn_with_line_numbers_and_the_rest_load() {
        let good = PasswordHash::with_salt(HashType::Sha512Pbkdf2, b"ok", b"saltsaltsalt", 2);
        let text = format!(
            "# comment\n\
             \n\
             nocolon\n\
             plain:password\n\
             short:$7$101$c2FsdA==$aGFzaA==\n\
             iter:$7$x$c2FsdA==$aGFzaA==\n\
             zero:$7$0$c2FsdA==$aGFzaA==\n\
             fields:$6$c2FsdA==\n\
             b64:$6$c2F*dA==$aGFzaA==\n\
             :$7$1$c2FsdA==$aGFzaA==\n\
             unknown:$5$abc$def\n\
             good:{good}\n"
        );
        let (file, warnings) = parse(&text);
        let lines: Vec<&str> = warnings
            .iter()
            .map(|w| w.split(": ").next().unwrap_or_default())
            .collect();
        assert_eq!(
            lines,
            ["pw:3", "pw:4", "pw:5", "pw:6", "pw:7", "pw:8", "pw:9", "pw:10", "pw:11"],
            "{warnings:#?}"
        );
        assert!(warnings[1].contains("not hashed"));
        assert!(warnings[2].contains("instead of 64"));
        assert!(warnings[8].contains("$5$"));
        for user in ["plain", "short", "iter", "zero", "fields", "b64", "unknown"] {
            assert!(!file.check(user, b"password"), "{user}");
        }
        assert!(file.check("good", b"ok"));
        assert_eq!(file.users(), ["good"]);
    }

    #[test]
    fn a_duplicate_user_keeps_the_first_line_and_warns() {
        let a = PasswordHash::with_salt(HashType::Sha512Pbkdf2, b"first", b"s1", 1);
        let b = PasswordHash::with_salt(HashType::Sha512Pbkdf2, b"second", b"s2", 1);
        let (file, warnings) = parse(&format!("u:{a}\nu:{b}\n"));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("pw:2:") && warnings[0].contains("line 1"));
        assert!(file.check("u", b"first"));
        assert!(!file.check("u", b"second"));
    }

    #[test]
    fn a_malformed_duplicate_does_not_unlock_the_user() {
        let a = PasswordHash::with_salt(HashType::Sha512Pbkdf2, b"pw", b"s1", 1);
        let (file, warnings) = parse(&format!("u:garbage\nu:{a}\n"));
        assert_eq!(warnings.len(), 2);
        assert!(!file.check("u", b"pw"));
    }

    #[test]
    fn crlf_line_endings_and_surrounding_blanks_are_tolerated() {
        let (file, warnings) = parse(&format!("  {MOSQUITTO_ALICE}  \r\n"));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(file.check("alice", b"secret"));
    }

    #[test]
    fn load_reports_missing_file_as_io_error() {
        let err = PasswordFile::load("/nonexistent/midge/passwd").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn debug_output_does_not_leak_the_hash() {
        let hash = PasswordHash::with_salt(HashType::Sha512Pbkdf2, b"pw", b"salt", 1);
        let debug = format!("{hash:?}");
        assert!(!debug.contains(&base64::encode(&hash.hash)));
        assert!(!debug.contains("c2FsdA"));
    }

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"xbc"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn set_user_replaces_in_place_appends_when_absent() {
        let text = "# users\na:$7$1$x$y\nb:$7$1$x$y\na:dup\n";
        assert_eq!(set_user(text, "a", "a:NEW"), "# users\na:NEW\nb:$7$1$x$y\n");
        assert_eq!(set_user(text, "c", "c:NEW"), format!("{text}c:NEW\n"));
        assert_eq!(set_user("", "c", "c:NEW"), "c:NEW\n");
        assert_eq!(
            set_user("b:1", "c", "c:2"),
            "b:1\nc:2\n",
            "missing final newline"
        );
    }

    #[test]
    fn delete_user_removes_every_line_of_that_user() {
        let text = "a:1\nb:2\na:3\n# a:4\n";
        assert_eq!(delete_user(text, "a").as_deref(), Some("b:2\n# a:4\n"));
        assert_eq!(delete_user(text, "z"), None);
        assert_eq!(delete_user(text, "b").as_deref(), Some("a:1\na:3\n# a:4\n"));
    }

    #[test]
    fn hash_plaintext_hashes_each_line_and_keeps_comments() {
        let salt = b"fixedsalt123";
        let out = hash_plaintext("# c\nalice:secret\n\n bob : pw \n", |pw| {
            Ok(PasswordHash::with_salt(HashType::Sha512Pbkdf2, pw, salt, 3))
        })
        .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "# c");
        assert!(lines[1].starts_with("alice:$7$3$"));
        assert_eq!(lines[2], "");
        assert!(lines[3].starts_with("bob:$7$3$"));
        let (file, warnings) = parse(&out);
        assert!(warnings.is_empty());
        assert!(file.check("alice", b"secret"));
        assert!(
            file.check("bob", b"pw"),
            "blanks around the password are trimmed"
        );
    }

    #[test]
    fn hash_plaintext_refuses_to_hash_twice_and_rejects_corrupt_lines() {
        let gen = |pw: &[u8]| PasswordHash::generate(HashType::Sha512Pbkdf2, pw, 1);
        let err = hash_plaintext(&format!("x:y\n{MOSQUITTO_ALICE}\n"), gen).unwrap_err();
        assert!(
            err.starts_with("line 2:") && err.contains("already hashed"),
            "{err}"
        );
        let err = hash_plaintext("x:y\nnopassword\n", gen).unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        let err = hash_plaintext("x:\n", gen).unwrap_err();
        assert!(err.starts_with("line 1:"), "{err}");
    }

    #[test]
    fn usernames_follow_mosquitto_passwd_rules() {
        assert!(check_username("alice").is_ok());
        assert!(check_username("with space").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("a:b").is_err());
        assert!(check_username("a\tb").is_err());
        assert!(check_username(&"x".repeat(65536)).is_err());
    }

    #[test]
    fn hash_type_names_match_mosquitto_passwd() {
        assert_eq!(HashType::from_name("sha512"), Some(HashType::Sha512));
        assert_eq!(
            HashType::from_name("sha512-pbkdf2"),
            Some(HashType::Sha512Pbkdf2)
        );
        assert_eq!(HashType::from_name("argon2id"), None);
    }
}
