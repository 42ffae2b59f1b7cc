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
//! midge-bench retained [--count N] [--topics home] [--filter F] [--pid PID]
//! midge-bench connstorm [--duration S | --conns N]
//! midge-bench sessions [--sessions N] [--count M] [--pid PID]
//! midge-bench subcost --shape exact|plus|hash|mix --filters N [--publishes P] [--callgrind --pid PID]
//! midge-bench forward-server --port P
//! midge-bench sessions-server --port P
//! ```
//!
//! Each run prints one machine-readable line, `RESULT scenario=... key=value ...`, then one
//! line for humans (at QoS 1 two: the second gives the PUBACK latency, also in the RESULT
//! line as `ack_p50_us`, `ack_p99_us`, `ack_max_us`). Errors (a broker closing a connection, a malformed packet, a refused
//! CONNECT) end the run with a message and exit status 1, never a panic.

mod conns;
mod drain;
mod flow;
mod forward;
mod net;
mod scale;
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
  connstorm        connect / CONNACK / DISCONNECT cycles per second; with --conns N, a storm
                   of N connections held open (rate = N / time to the last CONNACK)
  sessions         N offline persistent sessions with M queued QoS 1 messages each reconnect
                   at once: time until every queue is drained
  subcost          --subs clients hold --filters subscriptions of one --shape; time (and with
                   --callgrind, broker instructions) per delivery of --publishes messages
                   that each match one filter
  forward-server   run a trivial forwarding server (no MQTT state) on --host/--port
  sessions-server  run the least a broker can do for `sessions` (one list of messages sent
                   to each returning persistent session, 20 in flight) on --host/--port

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
  --conns N        idle connections (5000); connstorm: the storm's size
  --pid PID        broker process, for idle (RSS and wake-ups from /proc); retained,
                   sessions, subcost: RSS readings between phases
  --topics T       retained: private (PREFIX/r/N, default) or home (sensors/N/ROOM, ~20 B,
                   one in eight ROOM is kitchen)
  --sessions N     sessions: persistent sessions (1000)
  --shape S        subcost: exact (x/K/v), plus (p/+/K), hash (h/K/#) or mix (all three)
  --filters N      subcost: subscriptions in total (10000)
  --publishes P    subcost: messages in the measured phase (10000)
  --callgrind      subcost: the broker (--pid) runs under callgrind; report instructions
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
    conns: Option<usize>,
    pid: Option<u32>,
    topics: conns::RetainedTopics,
    sessions: usize,
    shape: scale::FilterShape,
    filters: usize,
    publishes: usize,
    callgrind: bool,
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
        conns: None,
        pid: None,
        topics: conns::RetainedTopics::Private,
        sessions: 1000,
        shape: scale::FilterShape::Exact,
        filters: 10_000,
        publishes: 10_000,
        callgrind: false,
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
            "--conns" => a.conns = Some(num("--conns", argv.next())?),
            "--topics" => {
                a.topics = match argv.next().as_deref() {
                    Some("home") => conns::RetainedTopics::Home,
                    Some("private") => conns::RetainedTopics::Private,
                    _ => return Err("--topics must be home or private".into()),
                }
            }
            "--sessions" => a.sessions = num("--sessions", argv.next())?,
            "--shape" => {
                let v: String = num("--shape", argv.next())?;
                a.shape = scale::FilterShape::parse(&v)
                    .ok_or_else(|| format!("--shape: unknown shape {v:?}"))?;
            }
            "--filters" => a.filters = num("--filters", argv.next())?,
            "--publishes" => a.publishes = num("--publishes", argv.next())?,
            "--callgrind" => a.callgrind = true,
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
    if a.count == 0
        || a.conns == Some(0)
        || a.parallel == 0
        || a.sessions == 0
        || a.filters == 0
        || a.publishes == 0
    {
        return Err(
            "--count, --conns, --parallel, --sessions, --filters and --publishes must be positive"
                .into(),
        );
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
            let n = a.conns.unwrap_or(5000);
            let r = conns::idle(addr, n, pid, Duration::from_secs_f64(a.wait))?;
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
            let o = conns::RetainedOpts {
                count: a.count,
                size: a.size,
                qos: a.qos,
                filter: &a.filter,
                topics: a.topics,
                prefix: &prefix,
                pid: a.pid,
            };
            let r = conns::retained(addr, &o)?;
            let secs = r.elapsed.as_secs_f64().max(1e-9);
            let rate = r.delivered as f64 / secs;
            // Memory at rest per stored message, and the replay's peak, with a broker pid.
            let mem = if a.pid.is_some() {
                let (before, stored) = r.rss_kb;
                format!(
                    " rss_before_kb={before} rss_stored_kb={stored} bytes_per_retained={:.0} \
                     replay_hwm_kb={}",
                    (stored as f64 - before as f64) * 1024.0 / r.count as f64,
                    r.hwm_kb
                )
            } else {
                String::new()
            };
            out!(
                "RESULT scenario=retained qos={} count={} expected={} delivered={} lost={} dup={} \
                 not_retained={} foreign={} time_ms={:.1} first_ms={:.1} rate={rate:.0} \
                 store_ms={:.1}{mem}{label}",
                a.qos,
                r.count,
                r.expected,
                r.delivered,
                r.expected - r.delivered,
                r.dup,
                r.not_retained,
                r.foreign,
                secs * 1000.0,
                r.first.as_secs_f64() * 1000.0,
                r.store_elapsed.as_secs_f64() * 1000.0,
            );
            out!(
                "retained: {} of {} matching retained messages ({} stored) reached a new '{}' \
                 subscriber in {:.1} ms ({rate:.0} msg/s)",
                r.delivered,
                r.expected,
                r.count,
                a.filter,
                secs * 1000.0
            );
        }
        "connstorm" if a.conns.is_some() => {
            let n = a.conns.unwrap_or(0);
            let r = conns::burst(addr, n, a.parallel)?;
            let secs = r.elapsed.as_secs_f64().max(1e-9);
            let rate = r.connected as f64 / secs;
            out!(
                "RESULT scenario=connstorm parallel={} conns={n} rate={rate:.0} connected={} \
                 failed={} time_ms={:.1}{label}",
                a.parallel,
                r.connected,
                r.failed,
                secs * 1000.0
            );
            out!(
                "connstorm: {} of {n} connections accepted and held in {:.1} ms ({rate:.0}/s), \
                 {} failed",
                r.connected,
                secs * 1000.0,
                r.failed
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
        "sessions" => {
            let r = scale::sessions(addr, a.sessions, a.count, a.size, &prefix, a.pid)?;
            let secs = r.drain.as_secs_f64().max(1e-9);
            let (offline, queued) = r.rss_kb;
            out!(
                "RESULT scenario=sessions sessions={} queued={} expected={} delivered={} lost={} \
                 dup={} time_ms={:.1} rate={:.0} queue_ms={:.1} rss_offline_kb={offline} \
                 rss_queued_kb={queued} bytes_per_queued={:.0}{label}",
                a.sessions,
                a.count,
                r.expected,
                r.delivered,
                r.expected - r.delivered,
                r.dup,
                secs * 1000.0,
                r.delivered as f64 / secs,
                r.queueing.as_secs_f64() * 1000.0,
                (queued as f64 - offline as f64) * 1024.0 / r.expected as f64,
            );
            out!(
                "sessions: {} sessions drained {} of {} queued messages in {:.1} ms",
                a.sessions,
                r.delivered,
                r.expected,
                secs * 1000.0
            );
        }
        "subcost" => {
            let r = scale::subcost(
                addr,
                a.shape,
                a.subs.unwrap_or(100),
                a.filters,
                a.publishes,
                a.pid,
                a.callgrind,
            )?;
            let per = |v: u64| v as f64 / r.delivered.max(1) as f64;
            // Nothing delivered: no cost per delivery to speak of.
            let ir = match r.instructions {
                Some(i) if r.delivered > 0 => {
                    format!(" instructions={i} ir_per_msg={:.0}", per(i))
                }
                Some(i) => format!(" instructions={i} ir_per_msg=NA"),
                None => String::new(),
            };
            let (before, after) = r.rss_kb;
            out!(
                "RESULT scenario=subcost shape={} clients={} filters={} publishes={} delivered={} \
                 lost={} time_ms={:.1} rate={:.0} setup_ms={:.1} rss_before_kb={before} \
                 rss_subscribed_kb={after} bytes_per_filter={:.0}{ir}{label}",
                a.shape.name(),
                a.subs.unwrap_or(100),
                a.filters,
                a.publishes,
                r.delivered,
                a.publishes as u64 - r.delivered.min(a.publishes as u64),
                r.elapsed.as_secs_f64() * 1000.0,
                r.delivered as f64 / r.elapsed.as_secs_f64().max(1e-9),
                r.setup.as_secs_f64() * 1000.0,
                (after as f64 - before as f64) * 1024.0 / a.filters as f64,
            );
            out!(
                "subcost {}: {} filters, {} of {} publishes delivered{}",
                a.shape.name(),
                a.filters,
                r.delivered,
                a.publishes,
                r.instructions.map_or(String::new(), |i| format!(
                    ", {:.0} instructions each",
                    per(i)
                ))
            );
        }
        "forward-server" => forward::serve(addr)?,
        "sessions-server" => drain::serve(addr)?,
        other => {
            return Err(std::io::Error::other(format!("unknown scenario {other:?}")));
        }
    }
    Ok(())
}
