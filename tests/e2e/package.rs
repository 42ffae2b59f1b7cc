//! The Debian package made by scripts/package-deb.sh: its contents, lintian, the man pages, and
//! (as root) dpkg -i / -r / --purge with the files, owners, modes and the `midge` user each
//! leaves behind. The package is built from the test build's own binaries (stripped by the
//! script), so this costs seconds, not a release build.
//!
//! Nothing here starts a service: the maintainer scripts only talk to systemd when it runs
//! (/run/systemd/system), and during dpkg -i a policy-rc.d forbids it anyway.

use crate::common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// True when CI (scripts/test.sh) requires every tool, so a missing one fails instead of
/// skipping.
fn required() -> bool {
    std::env::var_os("MIDGE_TEST_REQUIRE_ALL").is_some()
}

/// Skips (or, when required, fails) unless `tool` runs.
fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !required(),
            "MIDGE_TEST_REQUIRE_ALL is set but {tool} is missing"
        );
        eprintln!("skipped: {tool} is not installed (scripts/test.sh installs it)");
    }
    ok
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// Builds the amd64 package from the binaries of this test build into `out`.
fn build_deb(out: &Path) -> PathBuf {
    let bindir = Path::new(midge_bin()).parent().expect("binary dir");
    let path = stdout(
        Command::new(repo_root().join("scripts/package-deb.sh"))
            .arg("amd64")
            .arg(bindir)
            .arg(out),
    );
    let deb = PathBuf::from(path.trim());
    assert!(deb.is_file(), "package-deb.sh printed {deb:?}, not a file");
    deb
}

fn amd64_host() -> bool {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("skipped: the test packages this build's binaries as amd64");
        return false;
    }
    true
}

#[test]
fn deb_holds_the_binaries_conffiles_unit_and_man_pages_owned_by_root() {
    if skip_on_mosquitto("midge's own package") || !amd64_host() || !have("dpkg-deb") {
        return;
    }
    let dir = TempDir::new();
    let deb = build_deb(dir.path());
    let listing = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb));
    // (mode, path) of every file the package must hold; all owned by root/root.
    let want = [
        ("-rwxr-xr-x", "./usr/bin/midge"),
        ("-rwxr-xr-x", "./usr/bin/midge_passwd"),
        ("-rwxr-xr-x", "./usr/bin/midge_ctrl"),
        ("-rw-r--r--", "./etc/midge/midge.conf"),
        ("-rw-r--r--", "./etc/logrotate.d/midge"),
        ("-rw-r--r--", "./lib/systemd/system/midge.service"),
        ("-rw-r--r--", "./usr/share/man/man8/midge.8.gz"),
        ("-rw-r--r--", "./usr/share/man/man5/midge.conf.5.gz"),
        ("-rw-r--r--", "./usr/share/man/man1/midge_passwd.1.gz"),
        ("-rw-r--r--", "./usr/share/man/man1/midge_ctrl.1.gz"),
        ("-rw-r--r--", "./usr/share/doc/midge/copyright"),
        ("-rw-r--r--", "./usr/share/doc/midge/changelog.gz"),
        ("-rw-r--r--", "./usr/share/doc/midge/options.md"),
        ("-rw-r--r--", "./usr/share/doc/midge/admin.md"),
        ("-rw-r--r--", "./usr/share/doc/midge/dynsec.md"),
    ];
    for (mode, path) in want {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("{path} not in the package:\n{listing}"));
        assert!(
            line.starts_with(&format!("{mode} root/root ")),
            "{path}: {line}"
        );
    }
    for line in listing.lines() {
        assert!(line.contains(" root/root "), "not owned by root: {line}");
    }
    // No state in the package: the postinst makes /var/lib/midge with the right owner.
    assert!(!listing.contains("./var/"), "{listing}");

    let control = stdout(Command::new("dpkg-deb").arg("-f").arg(&deb));
    assert!(control.contains("Package: midge\n"), "{control}");
    assert!(control.contains("Architecture: amd64\n"), "{control}");
    assert!(control.contains("Depends: libc6 (>= 2."), "{control}");
    assert!(control.contains("adduser"), "{control}");

    let ctl = TempDir::new();
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(ctl.path()));
    let conffiles = std::fs::read_to_string(ctl.path().join("conffiles")).expect("conffiles");
    assert_eq!(conffiles, "/etc/midge/midge.conf\n/etc/logrotate.d/midge\n");

    let unit = TempDir::new();
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(unit.path()));
    let service =
        std::fs::read_to_string(unit.path().join("lib/systemd/system/midge.service")).unwrap();
    assert!(
        service.contains("\nExecStart=/usr/bin/midge -c /etc/midge/midge.conf"),
        "{service}"
    );
    assert!(
        service.contains("Documentation=man:midge(8) man:midge.conf(5)"),
        "{service}"
    );
    // The shipped midge.conf, with the paths the package makes.
    let conf = std::fs::read_to_string(unit.path().join("etc/midge/midge.conf")).unwrap();
    for line in [
        "user midge",
        "password_file /etc/midge/passwd",
        "persistence true",
        "persistence_location /var/lib/midge/",
    ] {
        assert!(conf.lines().any(|l| l == line), "midge.conf lacks {line:?}");
    }
    // The packaged binary is the one built, stripped.
    let v = stdout(Command::new(unit.path().join("usr/bin/midge")).arg("--version"));
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
}

#[test]
fn lintian_finds_no_error_or_warning() {
    if skip_on_mosquitto("midge's own package") || !amd64_host() || !have("lintian") {
        return;
    }
    let dir = TempDir::new();
    let deb = build_deb(dir.path());
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning"])
        .arg(&deb)
        .output()
        .expect("lintian");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "lintian:\n{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "{text}"
    );
}

/// Text without nroff's overstrike (bold is `c\bc`, underline `_\bc`).
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if chars.peek() == Some(&'\u{8}') {
            chars.next();
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn man_pages_render_without_warnings() {
    if skip_on_mosquitto("midge's own man pages") || !have("man") || !have("groff") {
        return;
    }
    for page in ["midge.8", "midge.conf.5", "midge_passwd.1", "midge_ctrl.1"] {
        let path = repo_root().join("docs/man").join(page);
        // groff with every warning on: a bad macro or escape is a message on stderr.
        let out = Command::new("groff")
            .args(["-ww", "-z", "-man"])
            .arg(&path)
            .output()
            .expect("groff");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "0")
            .output()
            .expect("man");
        let text = plain(&String::from_utf8_lossy(&out.stdout));
        assert!(out.status.success(), "{page}: man failed");
        assert!(
            out.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("NAME") && text.contains("SEE ALSO"), "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Installing and removing, as root

struct Meta {
    mode: u32,
    owner: String,
    group: String,
}

fn meta(path: &str) -> Meta {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Meta {
        mode: m.permissions().mode() & 0o7777,
        owner: name_of("passwd", m.uid()),
        group: name_of("group", m.gid()),
    }
}

/// The name of uid/gid `id` in the passwd or group database.
fn name_of(db: &str, id: u32) -> String {
    let out = Command::new("getent")
        .arg(db)
        .arg(id.to_string())
        .output()
        .expect("getent");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(':').next().unwrap_or_default().to_string()
}

fn assert_meta(path: &str, mode: u32, owner: &str, group: &str) {
    let m = meta(path);
    assert_eq!(
        (m.mode, m.owner.as_str(), m.group.as_str()),
        (mode, owner, group),
        "{path}: mode, owner, group"
    );
}

fn getent(db: &str, key: &str) -> Option<String> {
    let out = Command::new("getent")
        .arg(db)
        .arg(key)
        .output()
        .expect("getent");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn dpkg_status() -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "midge"])
        .output()
        .expect("dpkg-query");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when dpkg's status says the package's files or conffiles are on the machine.
fn on_machine(status: &str) -> bool {
    status.ends_with(" installed") || status.ends_with(" config-files") || status.contains("half")
}

/// A policy-rc.d that forbids starting services, removed on drop if this test wrote it.
struct NoServiceStarts(bool);

impl NoServiceStarts {
    fn new() -> NoServiceStarts {
        let p = Path::new("/usr/sbin/policy-rc.d");
        if p.exists() {
            return NoServiceStarts(false);
        }
        std::fs::write(
            p,
            "#!/bin/sh\n# tests/e2e/package.rs: no service starts\nexit 101\n",
        )
        .expect("write policy-rc.d");
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        NoServiceStarts(true)
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::fs::remove_file("/usr/sbin/policy-rc.d");
        }
    }
}

fn dpkg(args: &[&str]) {
    let _guard = SYSTEM_USERS.lock().unwrap_or_else(|e| e.into_inner());
    run(Command::new("dpkg")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive"));
}

/// Runs the installed /usr/bin/midge as root with `user midge` and persistence in
/// /var/lib/midge, stores a retained message and stops it: the directories the package made
/// are usable by the user it made.
fn run_installed_broker() {
    let dir = TempDir::new();
    let port = free_port();
    let conf = dir.write(
        "pkg.conf",
        &format!(
            "user midge\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location /var/lib/midge/\n"
        ),
    );
    let mut child = Command::new("/usr/bin/midge")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start /usr/bin/midge");
    wait_listening(&mut child, port, Duration::from_secs(10), "installed midge");
    run(Command::new(MOSQUITTO_PUB).args([
        "-p",
        &port.to_string(),
        "-t",
        "pkg/test",
        "-m",
        "kept",
        "-r",
        "-q",
        "1",
    ]));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_child(&mut child, WAIT).expect("midge stops on SIGTERM");
    let out = child.wait_with_output().expect("midge output");
    assert!(
        status.success(),
        "{status}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // midge opened the store after dropping to user midge.
    assert_meta("/var/lib/midge/midge.db", 0o600, "midge", "midge");
}

#[test]
fn dpkg_install_remove_purge() {
    if skip_on_mosquitto("midge's own package") || !amd64_host() || !have("dpkg") {
        return;
    }
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: installing a package needs root");
        return;
    }
    // Never touch a midge the machine really has.
    let before = dpkg_status();
    assert!(
        !on_machine(&before),
        "a midge package is already on this machine ({before}); remove it (dpkg --purge midge) \
         to run this test"
    );
    assert!(
        getent("passwd", "midge").is_none() && getent("group", "midge").is_none(),
        "a user or group midge already exists; this test creates and deletes it"
    );
    let dir = TempDir::new();
    let deb = build_deb(dir.path());
    let deb = deb.to_str().expect("utf-8 path");
    {
        let _guard = NoServiceStarts::new();
        dpkg(&["-i", deb]);
    }
    assert_eq!(dpkg_status(), "install ok installed");

    // Files, modes and owners.
    assert_meta("/usr/bin/midge", 0o755, "root", "root");
    assert_meta("/usr/bin/midge_passwd", 0o755, "root", "root");
    assert_meta("/usr/bin/midge_ctrl", 0o755, "root", "root");
    assert_meta("/etc/midge/midge.conf", 0o644, "root", "root");
    assert_meta("/etc/midge/passwd", 0o640, "root", "midge");
    assert_meta("/var/lib/midge", 0o700, "midge", "midge");
    assert_meta("/var/log/midge", 0o750, "midge", "midge");
    assert_meta("/etc/logrotate.d/midge", 0o644, "root", "root");
    assert_eq!(std::fs::metadata("/etc/midge/passwd").unwrap().len(), 0);
    let v = stdout(Command::new("/usr/bin/midge").arg("--version"));
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");

    // A system user with no login and no home of its own outside /var/lib/midge.
    let user = getent("passwd", "midge").expect("user midge");
    let f: Vec<&str> = user.split(':').collect();
    let uid: u32 = f[2].parse().unwrap();
    assert!(uid < 1000, "a system uid: {user}");
    assert_eq!(
        (f[5], f[6]),
        ("/var/lib/midge", "/usr/sbin/nologin"),
        "{user}"
    );
    let group = getent("group", "midge").expect("group midge");
    assert_eq!(group.split(':').nth(2), Some(f[3]), "primary group midge");

    let conffiles = stdout(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "midge"]));
    assert!(conffiles.contains(" /etc/midge/midge.conf "), "{conffiles}");
    assert!(
        conffiles.contains(" /etc/logrotate.d/midge "),
        "{conffiles}"
    );
    let files = stdout(Command::new("dpkg").args(["-L", "midge"]));
    for f in [
        "/usr/share/man/man8/midge.8.gz",
        "/usr/share/man/man5/midge.conf.5.gz",
        "/usr/share/man/man1/midge_passwd.1.gz",
        "/usr/share/man/man1/midge_ctrl.1.gz",
        "/lib/systemd/system/midge.service",
    ] {
        assert!(files.lines().any(|l| l == f), "{f} not listed:\n{files}");
    }
    // man finds the installed pages by name.
    let page = plain(&stdout(Command::new("man").args([
        "-P",
        "cat",
        "5",
        "midge.conf",
    ])));
    assert!(page.contains("persistence_location"), "{page}");
    // The logrotate snippet parses now that its user exists (debug mode rotates nothing).
    if have("logrotate") {
        let out = Command::new("logrotate")
            .args(["-d", "/etc/logrotate.d/midge"])
            .output()
            .expect("logrotate");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !text.contains("error"),
            "logrotate:\n{text}"
        );
    }

    run_installed_broker();
    std::fs::write("/etc/midge/passwd", "alice:x\n").unwrap();

    // Remove: conffiles, the password file, the data, the logs and the user stay.
    dpkg(&["-r", "midge"]);
    assert_eq!(dpkg_status(), "deinstall ok config-files");
    assert!(!Path::new("/usr/bin/midge").exists());
    assert!(!Path::new("/lib/systemd/system/midge.service").exists());
    for kept in [
        "/etc/midge/midge.conf",
        "/etc/logrotate.d/midge",
        "/etc/midge/passwd",
        "/var/lib/midge/midge.db",
        "/var/log/midge",
    ] {
        assert!(Path::new(kept).exists(), "{kept} removed by dpkg -r");
    }
    assert_eq!(
        std::fs::read_to_string("/etc/midge/passwd").unwrap(),
        "alice:x\n"
    );
    assert!(getent("passwd", "midge").is_some());

    // Purge: all of it goes, and the user and group.
    dpkg(&["--purge", "midge"]);
    let after = dpkg_status();
    assert!(!on_machine(&after), "after purge: {after}");
    for gone in [
        "/etc/midge",
        "/etc/logrotate.d/midge",
        "/var/lib/midge",
        "/var/log/midge",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
    assert!(getent("passwd", "midge").is_none(), "user midge left");
    assert!(getent("group", "midge").is_none(), "group midge left");
}
