//! The web dashboard (`dashboard true`) in a real browser: Debian's headless Chromium, driven
//! by puppeteer-core from `dashboard.js` beside this file, against the real binary, with
//! mosquitto_sub and mosquitto_pub as the devices. The page logs in over MQTT-over-WebSocket
//! as any client does, so the broker's password file and ACL decide what it shows: the tests
//! check the client list (a client that leaves shown as gone), a topic's value updating live,
//! bridges going down, a viewer the ACL keeps out, a refused login, that nothing a device sent
//! is taken for HTML, that the browser reports no error, and a tree of 100 000 retained topics.
//! A screenshot is saved under `target/dashboard/` (the path is printed).
//!
//! Needs `node`, puppeteer-core in `target/node/node_modules` (or `MIDGE_TEST_NODE_MODULES`)
//! and `/usr/bin/chromium` (or `MIDGE_TEST_CHROMIUM`), which scripts/test.sh installs; without
//! them the tests say so and pass, unless `MIDGE_TEST_REQUIRE_ALL` is set (as scripts/test.sh
//! and so CI do).

use crate::common::certs::listener_ports;
use crate::common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// Longer than any wait inside the driver (20 s; two minutes for 100 000 topics).
const STEP: Duration = Duration::from_secs(150);

/// SHA-256 of MQTT.js 5.16.0's `dist/mqtt.min.js` (src/http/dashboard/vendor/README.md).
const MQTT_JS_SHA256: &str = "f3cbeae580d3010048938ee370f2db0c15d16e6f7fc147cb32ae5510e571b387";

/// Headless Chromium behind `dashboard.js`, one JSON command and answer a line.
struct Browser {
    child: Child,
    /// The driver's commands; closed first when the test ends, so that it closes Chromium.
    stdin: Option<ChildStdin>,
    answers: Receiver<String>,
}

impl Browser {
    /// Starts the browser; `None` (the test passes, saying why) when the tools are missing and
    /// `MIDGE_TEST_REQUIRE_ALL` is not set.
    fn launch() -> Option<Browser> {
        let modules = std::env::var_os("MIDGE_TEST_NODE_MODULES")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/node/node_modules"));
        let chromium = std::env::var_os("MIDGE_TEST_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        let node = Command::new("node").arg("--version").output();
        let missing = if !node.is_ok_and(|o| o.status.success()) {
            Some("node".to_string())
        } else if !modules.join("puppeteer-core/package.json").exists() {
            Some(format!("puppeteer-core in {}", modules.display()))
        } else if !chromium.exists() {
            Some(chromium.display().to_string())
        } else {
            None
        };
        if let Some(what) = missing {
            assert!(
                std::env::var_os("MIDGE_TEST_REQUIRE_ALL").is_none(),
                "MIDGE_TEST_REQUIRE_ALL is set but {what} is missing (scripts/test.sh installs it)"
            );
            eprintln!("skipping the browser test: {what} is missing (scripts/test.sh installs it)");
            return None;
        }
        let mut child = Command::new("node")
            .arg(repo_root().join("tests/e2e/dashboard.js"))
            .arg(&modules)
            .arg(&chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut browser = Browser {
            child,
            stdin: Some(stdin),
            answers,
        };
        let ready = browser.answer("launch");
        assert!(ready["ready"].is_string(), "{ready}");
        Some(browser)
    }

    fn answer(&mut self, what: &str) -> Value {
        let line = self
            .answers
            .recv_timeout(STEP)
            .unwrap_or_else(|e| panic!("no answer from the browser to {what}: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: {e}: {line}"))
    }

    /// Runs one step of `dashboard.js`; a failed step fails the test.
    fn ask(&mut self, command: Value) -> Value {
        let stdin = self.stdin.as_mut().expect("the driver is running");
        writeln!(stdin, "{command}").unwrap();
        let answer = self.answer(&command.to_string());
        assert!(answer.get("error").is_none(), "{command}: {answer}");
        answer
    }

    /// Fails the test on any console error or warning, uncaught exception, failed request or
    /// HTTP error status since the last call.
    fn assert_no_problems(&mut self) {
        let problems = self.ask(json!({"do": "problems"}));
        assert_eq!(
            problems["problems"],
            json!([]),
            "the browser reported problems"
        );
    }
}

impl Drop for Browser {
    /// Ends the driver so that Chromium goes with it, however the test ended: end of input
    /// makes it close the browser and exit; if it does not, SIGTERM lets puppeteer kill the
    /// browser it launched (SIGKILL would leave Chromium running, in its own process group).
    fn drop(&mut self) {
        drop(self.stdin.take());
        let exited = |child: &mut Child, within: Duration| {
            let deadline = std::time::Instant::now() + within;
            while std::time::Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        };
        if exited(&mut self.child, Duration::from_secs(10)) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        if !exited(&mut self.child, Duration::from_secs(5)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where the test's artefacts go: `target/dashboard/NAME`.
fn artefact(name: &str) -> String {
    let dir = repo_root().join("target/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_str().unwrap().to_string()
}

#[test]
fn the_dashboard_shows_a_login_what_its_acl_lets_it_read() {
    if skip_on_mosquitto("midge's own page") {
        return;
    }
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let dir = TempDir::new();
    let passwd = passwd_file(
        &dir,
        &[
            ("admin", "admin-pw"),
            ("viewer", "viewer-pw"),
            ("device", "device-pw"),
        ],
    );
    let acl = dir.write(
        "acl",
        "user admin\ntopic read #\ntopic read $SYS/#\ntopic write $CONTROL/midge/v1\n\
         topic read $CONTROL/midge/v1/response\n\n\
         user viewer\ntopic read public/#\n\n\
         user device\ntopic readwrite home/#\ntopic readwrite public/#\n",
    );
    let mut remote = Broker::start("");
    let b = Broker::start(&format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}\nsys_interval 1\n\
         listener 0 127.0.0.1\nprotocol websockets\ndashboard true\n\
         connection edge\naddress 127.0.0.1:{}\nremote_clientid edge\nrestart_timeout 1 2\n\
         topic public/# out 0\n",
        passwd.display(),
        acl.display(),
        remote.port()
    ));
    let ports = listener_ports(&b, 2);
    let (tcp, ws) = (ports[0], ports[1]);
    let device = ["-u", "device", "-P", "device-pw"];
    let publish = |args: &[&str]| mosquitto_pub(tcp, &[&device[..], args].concat());
    publish(&["-r", "-t", "home/kitchen/temp", "-m", "21.5"]);
    // A device that sends markup, in a topic name and in a payload.
    let markup_topic = "public/<img src=x onerror=alert(1)>";
    let markup = "<script>alert(2)</script><b>bold</b>";
    publish(&["-r", "-t", markup_topic, "-m", markup]);
    let display = Sub::spawn(
        tcp,
        120,
        &[
            &device[..],
            &["-i", "kitchen-display", "-t", "home/#", "-v"],
        ]
        .concat(),
    );
    assert_eq!(
        display.wait_lines(1, secs(10.0)),
        vec!["home/kitchen/temp 21.5"]
    );

    let opened =
        browser.ask(json!({"do": "open", "url": format!("http://127.0.0.1:{ws}/dashboard")}));
    assert_eq!(opened["status"], 200, "{opened}");
    assert_eq!(
        opened["url"],
        format!("http://127.0.0.1:{ws}/dashboard/"),
        "redirected"
    );
    let login = browser.ask(json!({"do": "login", "user": "admin", "password": "admin-pw"}));
    assert_eq!(login["board"], true, "{login}");

    // The client list: the mosquitto_sub client, online, as the administration API lists it.
    let client = browser.ask(json!({"do": "client", "id": "kitchen-display"}));
    let row = client["row"].as_array().unwrap();
    assert_eq!(row[2], "device", "{client}");
    assert_eq!(row[4], "3.1.1", "{client}");

    // The topic tree: the retained value, then a live one.
    let temp = browser.ask(json!({"do": "expand", "topic": "home/kitchen/temp"}));
    assert_eq!(temp["value"], "= 21.5");
    assert_eq!(temp["retained"], true);
    publish(&["-t", "home/kitchen/temp", "-m", "22.0"]);
    let live =
        browser.ask(json!({"do": "waitValue", "topic": "home/kitchen/temp", "value": "22.0"}));
    assert_eq!(live["retained"], false, "published without retain: {live}");
    assert_eq!(
        display.wait_lines(2, secs(10.0))[1],
        "home/kitchen/temp 22.0"
    );

    // Markup from a device is text.
    browser.ask(json!({"do": "expand", "topic": markup_topic}));
    let detail = browser.ask(json!({"do": "detail", "topic": markup_topic}));
    assert_eq!(detail["title"], markup_topic);
    assert_eq!(detail["payload"], markup);
    assert!(
        detail["html"]
            .as_str()
            .unwrap()
            .contains("&lt;script&gt;alert(2)&lt;/script&gt;"),
        "{detail}"
    );
    let tree = browser.ask(json!({"do": "tree", "ms": 0}));
    assert_eq!(tree["scripts"], 0, "{tree}");

    // $SYS: the bridge is up, the rates are drawn.
    browser.ask(json!({"do": "bridge", "name": "edge", "state": "up"}));
    let chart = browser.ask(json!({"do": "chart"}));
    assert!(
        chart["lines"].as_array().unwrap().contains(&json!("in")),
        "{chart}"
    );
    let shot = artefact("dashboard.png");
    browser.ask(json!({"do": "screenshot", "path": shot}));
    println!("dashboard screenshot: {shot}");
    remote.sigterm();
    remote.wait_exit(secs(10.0));
    browser.ask(json!({"do": "bridge", "name": "edge", "state": "down"}));
    // A client that leaves stays listed, as gone.
    drop(display);
    let gone = browser.ask(json!({"do": "clientGone", "id": "kitchen-display"}));
    assert!(gone["count"].as_str().unwrap().contains("1 gone"), "{gone}");
    browser.assert_no_problems();

    // A viewer who may read public/# only: no client list, nothing of home/.
    browser.ask(json!({"do": "logout"}));
    let login = browser.ask(json!({"do": "login", "user": "viewer", "password": "viewer-pw"}));
    assert_eq!(login["board"], true, "{login}");
    let note = browser.ask(json!({"do": "clientsNote"}));
    assert!(
        note["note"]
            .as_str()
            .unwrap()
            .starts_with("This login may not list clients"),
        "{note}"
    );
    assert_eq!(note["rows"], 0);
    browser.ask(json!({"do": "expand", "topic": markup_topic}));
    publish(&["-r", "-t", "home/kitchen/temp", "-m", "23.0"]);
    let tree = browser.ask(json!({"do": "tree", "ms": 2000}));
    let rows: Vec<&str> = tree["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(rows, vec!["public", markup_topic], "{tree}");
    assert_eq!(tree["count"], "1 topic, 1 message", "{tree}");
    browser.assert_no_problems();

    // A wrong password: refused, in the page.
    browser.ask(json!({"do": "logout"}));
    let refused = browser.ask(json!({"do": "login", "user": "viewer", "password": "guess"}));
    assert_eq!(refused["board"], false, "{refused}");
    assert_eq!(
        refused["refusal"],
        "Refused: Connection refused: Not authorized"
    );
    browser.assert_no_problems();
}

#[test]
fn the_tree_shows_100_000_retained_topics_a_hundred_rows_at_a_time() {
    if skip_on_mosquitto("midge's own page") {
        return;
    }
    let Some(mut browser) = Browser::launch() else {
        return;
    };
    let b = Broker::start("listener 0 127.0.0.1\nprotocol websockets\ndashboard true");
    let ports = listener_ports(&b, 2);
    let (tcp, ws) = (ports[0], ports[1]);
    fill_retained(tcp, "bulk", 100_000);

    browser.ask(json!({"do": "open", "url": format!("http://127.0.0.1:{ws}/dashboard/")}));
    // Anonymous: both fields empty.
    let login = browser.ask(json!({"do": "login", "user": "", "password": ""}));
    assert_eq!(login["board"], true, "{login}");
    assert_eq!(login["status"], "connected anonymously");
    let loaded = browser.ask(json!({"do": "topics", "min": 100_000}));
    println!("100 000 retained topics in the page: {loaded}");
    let bulk = browser.ask(json!({"do": "children", "topic": "bulk"}));
    println!("expanding them: {bulk}");
    assert_eq!(bulk["rows"], 100, "{bulk}");
    assert_eq!(bulk["more"], "show 100 more of 99900");
    assert!(bulk["allRows"].as_u64().unwrap() <= 102, "{bulk}");
    // Still live: a new value shows in its row.
    mosquitto_pub(tcp, &["-t", "bulk/10", "-m", "fresh"]);
    let row = browser.ask(json!({"do": "waitValue", "topic": "bulk/10", "value": "fresh"}));
    assert_eq!(row["retained"], false);
    browser.assert_no_problems();
}

#[test]
fn the_page_and_mqtt_js_are_served_as_vendored() {
    if skip_on_mosquitto("midge's own page") {
        return;
    }
    let b = Broker::start("listener 0 127.0.0.1\nprotocol websockets\ndashboard true");
    let ws = listener_ports(&b, 2)[1];
    let curl = |args: &[&str], path: &str| {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--max-time", "10"])
            .args(args)
            .arg(format!("http://127.0.0.1:{ws}{path}"));
        run_with_timeout(cmd, None, secs(20.0)).stdout
    };
    // curl decompresses what it asked for compressed: the bytes npm shipped.
    let js = curl(&["--compressed"], "/dashboard/mqtt.min.js");
    use sha2::Digest;
    assert_eq!(hex(&sha2::Sha256::digest(&js)), MQTT_JS_SHA256);
    let head = String::from_utf8(curl(&["-I"], "/dashboard/mqtt.min.js")).unwrap();
    assert!(head.contains("Content-Encoding: gzip\r\n"), "{head}");
    let refused = String::from_utf8(curl(
        &["-i", "-H", "Accept-Encoding: identity"],
        "/dashboard/mqtt.min.js",
    ))
    .unwrap();
    assert!(refused.starts_with("HTTP/1.1 406 "), "{refused}");
    let page = String::from_utf8(curl(&["-i"], "/dashboard/")).unwrap();
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("Content-Security-Policy: default-src 'none'"));
    assert!(page.contains("<script src=\"mqtt.min.js\" defer></script>"));
    // Without `dashboard true`, nothing.
    drop(b);
    let b = Broker::start("listener 0 127.0.0.1\nprotocol websockets\nmetrics true");
    let ws = listener_ports(&b, 2)[1];
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{ws}/dashboard/"));
    let status = run_with_timeout(cmd, None, secs(20.0)).stdout;
    assert_eq!(String::from_utf8_lossy(&status), "404");
}
