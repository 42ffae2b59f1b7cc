//! `midge-bench`: a load generator for MQTT 3.1.1 brokers, and a trivial forwarding server to
//! prove the generator is not the bottleneck.
//!
//! Packets are encoded by hand (no MQTT library), every message scenario runs on one thread
//! with non-blocking sockets and one `ppoll` loop, and each publisher writes its messages in
//! batches, one `write` per batch. The load is closed-loop: a publisher never has more than a
//! window of messages published but not yet received, so a broker's queues never reach their
//! limits and any loss is a broker bug. Each payload starts with the publisher id, a sequence
//! number and the send time, so the subscriber side measures latency and tells loss,
//! duplicates and reordering apart.
//!
//! ```text
//! midge-bench fanin|fanout|p2p [--qos 0|1|2] [--size B] [--duration S] [--rate R] ...
//! midge-bench idle --pid PID [--conns N]
//! midge-bench retained [--count N]
//! midge-bench connstorm [--duration S]
//! midge-bench forward-server --port P
//! ```
//!
//! Each run prints one machine-readable line, `RESULT scenario=... key=value ...`, then one
//! line for humans (at QoS 1 two: the second gives the PUBACK latency, also in the RESULT
//! line as `ack_p50_us`, `ack_p99_us`, `ack_max_us`). Errors (a broker closing a connection, a malformed packet, a refused
//! CONNECT) end the run with a message and exit status 1, never a panic.

mod conns;
mod flow;
mod forward;
mod net;
mod stats;
mod wire;

use flow::{FlowOpts, Shape};

/// Prints a line to stdout, ignoring a closed pipe (`midge-bench ... | head -1` must not panic).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
usage: midge-bench SCENARIO [options]

scenarios:
  fanin            N publishers -> 1 subscriber, one topic        (--pubs, default 8)
  fanout           1 publisher -> N subscribers, one topic        (--subs, default 100)
  p2p              N publisher/subscriber pairs, a topic per pair (--pairs, default 32)
  idle             open N idle connections, report broker RSS per connection (--pid required)
  retained         store N retained topics, time a new subscriber receiving them all
  connstorm        connect / CONNACK / DISCONNECT cycles per second
  forward-server   run a trivial forwarding server (no MQTT state) on --host/--port

options:
  --host ADDR      broker address (127.0.0.1)
  --port P         broker port (1883)
  --qos Q          0, 1 or 2 (0)
  --size B         payload bytes, at least 20 (64)
  --duration S     seconds of load (5)
  --rate R         offered load in messages/s over all publishers, spread evenly and paced
                   by a timer, still within the window (default: as fast as the window allows)
  --window W       messages in flight per publisher (default 800/publishers-per-subscriber,
                   at most 200)
  --pubs N --subs N --pairs N   scenario sizes
  --conns N        idle connections (5000)
  --pid PID        broker process, for idle (RSS and wake-ups from /proc)
  --wait S         idle: seconds the connections sit idle before measuring (2)
  --count N        retained topics (10000)
  --filter F       retained: the new subscriber's filter (#)
  --parallel N     connstorm: cycles in progress at once (8)
  --label TEXT     appended to the RESULT line as label=TEXT
";

/// Command-line options, with each scenario's defaults applied later.
struct Args {
    scenario: String,
    host: IpAddr,
    port: u16,
    qos: u8,
    size: usize,
    duration: f64,
    rate: Option<f64>,
    window: Option<u64>,
    pubs: Option<usize>,
    subs: Option<usize>,
    pairs: Option<usize>,
    conns: usize,
    pid: Option<u32>,
    wait: f64,
    count: usize,
    filter: String,
    parallel: usize,
    label: Option<String>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        scenario: String::new(),
        host: IpAddr::from([127, 0, 0, 1]),
        port: 1883,
        qos: 0,
        size: 64,
        duration: 5.0,
        rate: None,
        window: None,
        pubs: None,
        subs: None,
        pairs: None,
        conns: 5000,
        pid: None,
        wait: 2.0,
        count: 10_000,
        filter: "#".into(),
        parallel: 8,
        label: None,
    };
    fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
    }
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--scenario" => a.scenario = num("--scenario", argv.next())?,
            "--host" => a.host = num("--host", argv.next())?,
            "--port" => a.port = num("--port", argv.next())?,
            "--qos" => a.qos = num("--qos", argv.next())?,
            "--size" => a.size = num("--size", argv.next())?,
            "--duration" => a.duration = num("--duration", argv.next())?,
            "--rate" => a.rate = Some(num("--rate", argv.next())?),
            "--window" => a.window = Some(num("--window", argv.next())?),
            "--pubs" => a.pubs = Some(num("--pubs", argv.next())?),
            "--subs" => a.subs = Some(num("--subs", argv.next())?),
            "--pairs" => a.pairs = Some(num("--pairs", argv.next())?),
            "--conns" => a.conns = num("--conns", argv.next())?,
            "--pid" => a.pid = Some(num("--pid", argv.next())?),
            "--wait" => a.wait = num("--wait", argv.next())?,
            "--count" => a.count = num("--count", argv.next())?,
            "--filter" => a.filter = num("--filter", argv.next())?,
            "--parallel" => a.parallel = num("--parallel", argv.next())?,
            "--label" => a.label = Some(num("--label", argv.next())?),
            s if !s.starts_with('-') && a.scenario.is_empty() => a.scenario = s.to_string(),
            s => return Err(format!("unknown argument {s:?}")),
        }
    }
    if a.scenario.is_empty() {
        return Err("no scenario given".into());
    }
    if a.qos > 2 {
        return Err("--qos must be 0, 1 or 2".into());
    }
    if a.size < wire::STAMP_LEN {
        return Err(format!("--size must be at least {}", wire::STAMP_LEN));
    }
    let in_range = |v: f64, lo: f64, hi: f64| v >= lo && v < hi;
    if !in_range(a.duration, 0.001, 3600.0) || !in_range(a.wait, 0.0, 80.0) {
        return Err("--duration must be in (0, 3600) s and --wait in [0, 80) s".into());
    }
    if a.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err("--rate must be positive".into());
    }
    if a.window.is_some_and(|w| w == 0 || w > 60_000) {
        return Err("--window must be in 1..=60000".into());
    }
    if a.count == 0 || a.conns == 0 || a.parallel == 0 {
        return Err("--count, --conns and --parallel must be positive".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("midge-bench: {msg}");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("midge-bench {}: error: {e}", args.scenario);
            ExitCode::FAILURE
        }
    }
}

fn run(a: &Args) -> std::io::Result<()> {
    let addr = SocketAddr::new(a.host, a.port);
    let label = a
        .label
        .as_ref()
        .map(|l| format!(" label={l}"))
        .unwrap_or_default();
    let prefix = format!("midge-bench/{}", std::process::id());
    let duration = Duration::from_secs_f64(a.duration);
    match a.scenario.as_str() {
        "fanin" | "fanout" | "p2p" => {
            let (shape, pubs, subs) = match a.scenario.as_str() {
                "fanin" => (Shape::FanIn, a.pubs.unwrap_or(8), 1),
                "fanout" => (Shape::FanOut, 1, a.subs.unwrap_or(100)),
                _ => {
                    let n = a.pairs.unwrap_or(32);
                    (Shape::P2p, n, n)
                }
            };
            if pubs == 0 || subs == 0 {
                return Err(std::io::Error::other(
                    "need at least one publisher and subscriber",
                ));
            }
            net::raise_fd_limit();
            let per_sub = if shape == Shape::FanIn {
                pubs as u64
            } else {
                1
            };
            let window = a.window.unwrap_or((800 / per_sub).clamp(1, 200));
            let opts = FlowOpts {
                addr,
                shape,
                pubs,
                subs,
                qos: a.qos,
                size: a.size,
                duration,
                rate: a.rate,
                window,
                keepalive: 300,
                prefix,
            };
            let r = flow::run(&opts)?;
            let secs = r.elapsed.as_secs_f64();
            let rate = r.in_window as f64 / secs;
            let us = |ns: u64| ns as f64 / 1000.0;
            let offered = a.rate.map_or("max".to_string(), |r| format!("{r:.0}"));
            // QoS 1 publishers also report their PUBACK latency; other lines keep their keys.
            let acks = &r.ack_latency;
            let ack_fields = if a.qos == 1 {
                format!(
                    " acks={} ack_p50_us={:.1} ack_p99_us={:.1} ack_max_us={:.1}",
                    acks.len(),
                    us(acks.quantile(0.5)),
                    us(acks.quantile(0.99)),
                    us(acks.max()),
                )
            } else {
                String::new()
            };
            out!(
                "RESULT scenario={} qos={} pubs={pubs} subs={subs} size={} window={window} \
                 duration={secs:.1} offered={offered} rate={rate:.0} pub_rate={:.0} \
                 p50_us={:.1} p99_us={:.1} max_us={:.1} sent={} expected={} received={} \
                 lost={} dup={} reordered={} corrupt={} bad_acks={} open_flows={} stalls={}\
                 {ack_fields}{label}",
                shape.name(),
                a.qos,
                a.size,
                r.sent as f64 / secs,
                us(r.latency.quantile(0.5)),
                us(r.latency.quantile(0.99)),
                us(r.latency.max()),
                r.sent,
                r.expected,
                r.received,
                r.lost,
                r.dup,
                r.reordered,
                r.corrupt,
                r.bad_acks,
                r.open_flows,
                r.stalls,
            );
            out!(
                "{} QoS {}: {} -> {} clients, {:.0} deliveries/s ({:.0} msgs/s published), \
                 latency p50 {:.0} us p99 {:.0} us max {:.0} us; lost {} of {} ({:.2} %), \
                 {} duplicates, {} open QoS flows",
                shape.name(),
                a.qos,
                pubs,
                subs,
                rate,
                r.sent as f64 / secs,
                us(r.latency.quantile(0.5)),
                us(r.latency.quantile(0.99)),
                us(r.latency.max()),
                r.lost,
                r.expected,
                100.0 * r.lost as f64 / (r.expected.max(1) as f64),
                r.dup,
                r.open_flows,
            );
            if a.qos == 1 {
                out!(
                    "PUBACK latency: p50 {:.0} us p99 {:.0} us max {:.0} us over {} acks",
                    us(acks.quantile(0.5)),
                    us(acks.quantile(0.99)),
                    us(acks.max()),
                    acks.len(),
                );
            }
            debug_assert!(r.latency.len() <= r.received);
        }
        "idle" => {
            let pid = a
                .pid
                .ok_or_else(|| std::io::Error::other("idle needs --pid of the broker"))?;
            let r = conns::idle(addr, a.conns, pid, Duration::from_secs_f64(a.wait))?;
            let per_conn =
                (r.rss_after_kb as f64 - r.rss_before_kb as f64) * 1024.0 / r.conns as f64;
            out!(
                "RESULT scenario=idle conns={} rss_before_kb={} rss_after_kb={} hwm_kb={} \
                 bytes_per_conn={per_conn:.0} connect_rate={:.0} wakeups_per_s={:.1} \
                 idle_cpu_ms={}{label}",
                r.conns,
                r.rss_before_kb,
                r.rss_after_kb,
                r.hwm_kb,
                r.conns as f64 / r.connect_secs,
                r.wakeups_per_s,
                r.idle_cpu_ms,
            );
            out!(
                "idle: {} connections cost {per_conn:.0} B each (RSS {} -> {} kB); idle broker \
                 woke {:.1} times/s and used {} ms CPU in {} s",
                r.conns,
                r.rss_before_kb,
                r.rss_after_kb,
                r.wakeups_per_s,
                r.idle_cpu_ms,
                a.wait
            );
        }
        "retained" => {
            let r = conns::retained(addr, a.count, a.size, a.qos, &a.filter, &prefix)?;
            let secs = r.elapsed.as_secs_f64().max(1e-9);
            let rate = r.delivered as f64 / secs;
            out!(
                "RESULT scenario=retained qos={} count={} delivered={} lost={} dup={} \
                 not_retained={} foreign={} time_ms={:.1} rate={rate:.0} store_ms={:.1}{label}",
                a.qos,
                r.count,
                r.delivered,
                r.count - r.delivered,
                r.dup,
                r.not_retained,
                r.foreign,
                secs * 1000.0,
                r.store_elapsed.as_secs_f64() * 1000.0,
            );
            out!(
                "retained: {} of {} retained messages reached a new '{}' subscriber in {:.1} ms \
                 ({rate:.0} msg/s)",
                r.delivered,
                r.count,
                a.filter,
                secs * 1000.0
            );
        }
        "connstorm" => {
            let r = conns::connstorm(addr, duration, a.parallel)?;
            let rate = r.completed as f64 / r.elapsed.as_secs_f64();
            out!(
                "RESULT scenario=connstorm parallel={} rate={rate:.0} completed={} failed={} \
                 unclosed={}{label}",
                a.parallel,
                r.completed,
                r.failed,
                r.unclosed
            );
            out!(
                "connstorm: {rate:.0} connect/CONNACK/DISCONNECT cycles per second, {} failed",
                r.failed
            );
        }
        "forward-server" => forward::serve(addr)?,
        other => {
            return Err(std::io::Error::other(format!("unknown scenario {other:?}")));
        }
    }
    Ok(())
}
