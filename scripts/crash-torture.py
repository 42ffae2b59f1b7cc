#!/usr/bin/env python3
"""Crash torture test: kill the broker under load, again and again, and check the delivery contract.

Two persistent publishers (QoS 1 over MQTT 3.1.1 with clean session false, QoS 2 over MQTT 5
with a session expiry interval) and two persistent subscribers (one per protocol, both on
`torture/#` at QoS 2) run with paho-mqtt 2.x. The subscribers are slower than the publishers,
so the broker always holds queued and in-flight messages. Every 1-4 s the broker is stopped
(SIGKILL by default) and restarted on the same port and store; the clients reconnect and carry
on with their sessions. At the end the publishers stop, everything left is drained, and the
verdict is checked:

- every message the broker acknowledged (PUBACK for QoS 1; PUBREC for QoS 2, which paho reports
  only in its debug log, so PUBCOMP counts as well) reached each subscriber: none lost;
- each QoS 2 message reached each subscriber exactly once (QoS 1 may be duplicated).

Each payload carries its publisher's sequence number. Exit status: 0 the verdict holds, 1 it
does not (losses or QoS 2 duplicates, listed with their sequence numbers, packet ids and the
broker run they belong to), 2 the test itself could not run (no broker, too few kills...).

    cargo build --release
    scripts/crash-torture.py --long                     # 50 SIGKILLs, about 4 minutes
    scripts/crash-torture.py --long --signal TERM       # clean stops instead
    scripts/crash-torture.py --long --broker mosquitto  # Debian's Mosquitto, for comparison
    scripts/crash-torture.py --short --midge target/debug/midge   # what the test suite runs

Needs paho-mqtt 2.x: scripts/test.sh installs it into target/venv (run the script with
target/venv/bin/python). The broker runs in a temporary directory, kept when the verdict fails
(or with --keep): broker.conf, broker.log (every run appended, one header line per start) and
the store.
"""

import argparse
import collections
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPIC_FILTER = "torture/#"
PAYLOAD_SIZE = 100
# How many of a publisher's messages may wait for their acknowledgement: past this the
# publisher pauses (a real device would too), so a long outage does not pile up work in paho.
MAX_OUTSTANDING = 200


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Broker:
    """The broker under test: one process at a time, same port, config and store across runs."""

    def __init__(self, args, workdir):
        self.args = args
        self.workdir = workdir
        self.proc = None
        self.runs = 0
        self.port = free_port()
        store = os.path.join(workdir, "store")
        os.makedirs(store)
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        if not args.no_persistence:
            # Mosquitto wants the trailing slash; midge accepts it.
            lines += ["persistence true", f"persistence_location {store}/"]
        # The subscribers fall behind on purpose: nothing may be dropped for a full queue.
        lines.append("max_queued_messages 0")
        if os.geteuid() == 0:
            # Both brokers would otherwise switch to user `mosquitto`, who cannot write here.
            lines.append("user root")
        lines += args.conf
        self.conf = os.path.join(workdir, "broker.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log_path = os.path.join(workdir, "broker.log")
        self.binary = args.mosquitto if args.broker == "mosquitto" else args.midge

    def start(self):
        self.runs += 1
        with open(self.log_path, "ab") as logf:
            logf.write(f"==== torture: start {self.runs} at {time.time():.3f}\n".encode())
            logf.flush()
            cmd = [self.binary, "-c", self.conf] + (["-v"] if self.args.trace else [])
            # Should this script be killed (a test's time limit), the broker dies with it.
            if shutil.which("setpriv"):
                cmd = ["setpriv", "--pdeathsig", "KILL"] + cmd
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(
                    f"broker exited with {self.proc.returncode} at start {self.runs}; "
                    f"see {self.log_path}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise HarnessError(f"broker did not listen on port {self.port} within 30 s")

    def stop(self, sig):
        """Stops the broker with `sig`; returns False when SIGTERM needed more than 30 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            raise HarnessError(f"broker died on its own (status {proc and proc.returncode}); "
                               f"see {self.log_path}")
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
            return True
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return False


class HarnessError(Exception):
    """The test could not be run as meant; says nothing about the broker's guarantees."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Clock:
    """Which broker run the clients talk to: a loss or duplicate is reported with it."""
    run = 0


class Paho(mqtt.Client):
    """paho-mqtt 2.x's client, mended: before each connection attempt paho turns a QoS 2 message
    whose PUBREL it sent into one whose PUBREL it must send again, but a second attempt before a
    CONNACK (the broker was still going down, or not up yet) turns that into a fresh PUBLISH
    (DUP 0) with the same packet id. MQTT forbids it (v311:[MQTT-4.3.3-1]): the broker, which may
    have completed the flow, rightly takes the message for a new one, and it arrives twice.
    This keeps such messages at "send PUBREL again"; `--paho-as-is` shows the duplicates."""

    as_is = False

    def _messages_reconnect_reset_out(self):
        with self._out_message_mutex:
            released = [m for m in self._out_messages.values() if m.qos == 2 and m.state in (
                mqtt.mqtt_ms_wait_for_pubcomp, mqtt.mqtt_ms_resend_pubrel)]
        super()._messages_reconnect_reset_out()
        if Paho.as_is or self._check_clean_session():
            return
        with self._out_message_mutex:
            for m in released:
                m.state = mqtt.mqtt_ms_resend_pubrel


class Client(threading.Thread):
    """A paho client on its own thread: it drives paho's loop itself and reconnects whenever
    the connection breaks, as a device does. Callbacks and publish() share the thread, so the
    bookkeeping needs no locks against paho."""

    def __init__(self, name, protocol, port, trace):
        super().__init__(name=name, daemon=True)
        self.protocol = protocol
        self.port = port
        self.stopping = False
        self.up = False
        self.connects = 0
        self.failure = None
        # Guards what the main thread reads while the client runs (the acknowledged and the
        # received messages).
        self.lock = threading.Lock()
        kwargs = {"client_id": name, "protocol": protocol}
        if protocol != mqtt.MQTTv5:
            kwargs["clean_session"] = False
        self.c = Paho(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_log = self._on_log
        self.trace = open(os.path.join(trace, f"{name}.log"), "w") if trace else None

    def _on_log(self, client, userdata, level, buf):
        if self.trace:
            self.trace.write(f"{time.time():.6f} run {Clock.run}: {buf}\n")
        self.heard(buf)

    def heard(self, line):
        """paho's log `line` (its packets are in it)."""

    def _on_connect(self, client, userdata, flags, reason, properties):
        if reason.is_failure:
            return
        self.up = True
        self.connects += 1
        self.connected(flags.session_present)

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        self.up = False

    def connected(self, session_present):
        pass

    def step(self):
        pass

    def _connect(self, first):
        if self.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            if first:
                self.c.connect("127.0.0.1", self.port, keepalive=30, clean_start=False,
                               properties=props)
            else:
                self.c.reconnect()
        elif first:
            self.c.connect("127.0.0.1", self.port, keepalive=30)
        else:
            self.c.reconnect()

    def run(self):
        try:
            self._run()
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.failure = repr(e)

    def _run(self):
        first = True
        sock_open = False
        while not self.stopping:
            if not sock_open:
                try:
                    self._connect(first)
                    sock_open = True
                except OSError:
                    time.sleep(0.05)
                    continue
                finally:
                    first = False
            rc = self.c.loop(timeout=0.005)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                self.up = False
                sock_open = False
                time.sleep(0.02)
                continue
            if self.up:
                self.step()
        if sock_open and self.up:
            self.c.disconnect()
            self.c.loop(timeout=0.1)
        if self.trace:
            self.trace.close()


class Publisher(Client):
    """Publishes `<qos> <seq>` payloads at `rate` a second on `torture/q<qos>`."""

    def __init__(self, qos, protocol, port, rate, trace):
        super().__init__(f"torture-pub-q{qos}", protocol, port, trace)
        self.qos = qos
        self.topic = f"torture/q{qos}"
        self.interval = 1.0 / rate
        self.publishing = True
        self.seq = 0
        self.published = 0
        self.next_at = time.monotonic()
        self.pending = {}  # paho mid -> seq, until the final acknowledgement
        self.acked = {}  # seq -> broker run in which the broker acknowledged it
        self.completed = 0  # QoS 2: PUBCOMP received
        self.refused = {}  # seq -> reason code of a failed PUBACK/PUBCOMP (MQTT 5)
        self.c.on_publish = self._on_publish

    def step(self):
        now = time.monotonic()
        if not self.publishing or now < self.next_at or len(self.pending) >= MAX_OUTSTANDING:
            return
        # After a pause, carry on at the rate rather than catching up in a burst.
        self.next_at = max(self.next_at + self.interval, now - self.interval)
        self.seq += 1
        head = f"{self.qos} {self.seq} ".encode()
        info = self.c.publish(self.topic, head + b"x" * (PAYLOAD_SIZE - len(head)), qos=self.qos)
        # A broken connection leaves the message in paho's session, sent again on reconnect.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN, mqtt.MQTT_ERR_CONN_LOST):
            raise RuntimeError(f"paho refused publish {self.seq}: {info.rc}")
        self.published += 1
        self.pending[info.mid] = self.seq

    PUBREC = re.compile(r"Received PUBREC \(Mid: (\d+)\)")

    def heard(self, line):
        m = self.PUBREC.match(line) if self.qos == 2 else None
        if m:
            seq = self.pending.get(int(m.group(1)))
            if seq is not None:
                with self.lock:
                    self.acked.setdefault(seq, Clock.run)

    def _on_publish(self, client, userdata, mid, reason, properties):
        seq = self.pending.pop(mid, None)
        if seq is None:
            return
        if reason.is_failure:
            self.refused[seq] = str(reason)
            return
        if self.qos == 2:
            self.completed += 1
        with self.lock:
            self.acked.setdefault(seq, Clock.run)

    def acked_now(self):
        with self.lock:
            return set(self.acked)


class Subscriber(Client):
    """Subscribes to `torture/#` at QoS 2 once per session and takes `delay` per message."""

    def __init__(self, label, protocol, port, delay, trace):
        super().__init__(f"torture-sub-{label}", protocol, port, trace)
        self.label = label
        self.delay = delay
        self.subscribed = threading.Event()
        self.sessions_lost = 0
        self.count = 0
        # (qos, seq) -> [(packet id, dup flag, broker run)] of each arrival
        self.arrivals = collections.defaultdict(list)
        self.strangers = []
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe

    def connected(self, session_present):
        if session_present:
            return
        if self.connects > 1:
            # The broker forgot the session (and its subscription): subscribe again so the
            # run goes on; what the session held is lost and shows up in the verdict.
            self.sessions_lost += 1
        self.c.subscribe(TOPIC_FILTER, qos=2)

    def _on_subscribe(self, client, userdata, mid, reasons, properties):
        if all(not r.is_failure for r in reasons):
            self.subscribed.set()

    def received(self, qos):
        with self.lock:
            return {seq for (q, seq) in self.arrivals if q == qos}

    def _on_message(self, client, userdata, msg):
        try:
            qos, seq = (int(x) for x in msg.payload.split(b" ", 2)[:2])
        except ValueError:
            self.strangers.append(msg.payload[:40])
            return
        with self.lock:
            self.arrivals[(qos, seq)].append((msg.mid, msg.dup, Clock.run))
            self.count += 1
        # The slow consumer: paho acknowledges a QoS 1 message (and completes a QoS 2 one)
        # when this returns, so the broker's window to us stays full and its queue grows.
        time.sleep(self.delay)


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring (head of this file) for what is checked.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--short", action="store_true",
                      help="the test suite's run: 5 stops, 1-2 s apart (default)")
    mode.add_argument("--long", action="store_true", help="50 stops, 1-4 s apart")
    p.add_argument("--kills", type=int, help="number of stops (overrides the mode)")
    p.add_argument("--interval", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="seconds between stops, drawn uniformly (overrides the mode)")
    p.add_argument("--signal", choices=["KILL", "TERM"], default="KILL",
                   help="how the broker is stopped (default KILL)")
    p.add_argument("--broker", choices=["midge", "mosquitto"], default="midge")
    p.add_argument("--midge", help="midge binary (default target/release/midge, else "
                                   "target/debug/midge)")
    p.add_argument("--mosquitto", default="/usr/sbin/mosquitto")
    p.add_argument("--rate", type=float, default=150,
                   help="messages a second per publisher (default 150); the subscribers "
                        "take 1/(1.6 x rate) s per message, so they fall behind")
    p.add_argument("--no-persistence", action="store_true",
                   help="run the broker without persistence: the verdict must fail, which "
                        "shows that it can")
    p.add_argument("--conf", action="append", default=[], metavar="LINE",
                   help="an extra line for the broker's config (repeatable)")
    p.add_argument("--paho-as-is", action="store_true",
                   help="leave paho's re-sending of a released QoS 2 message unmended (see Paho)")
    p.add_argument("--seed", type=int, help="seed for the stop intervals")
    p.add_argument("--keep", action="store_true", help="keep the broker's directory")
    p.add_argument("--discard", action="store_true",
                   help="remove the broker's directory even when the verdict fails")
    p.add_argument("--trace", action="store_true",
                   help="start the broker with -v and write each client's packets (paho's log) "
                        "to its directory, which is kept")
    p.add_argument("--self-check", action="store_true",
                   help="check the verdict on made-up results (no broker) and exit")
    args = p.parse_args()
    long = args.long
    if args.kills is None:
        args.kills = 50 if long else 5
    if args.interval is None:
        args.interval = (1.0, 4.0) if long else (1.0, 2.0)
    if args.midge is None:
        release = os.path.join(ROOT, "target/release/midge")
        args.midge = release if os.path.exists(release) else os.path.join(
            ROOT, "target/debug/midge")
    if args.seed is None:
        args.seed = random.randrange(1 << 32)
    return args


def wait_until(pred, timeout, quiet=None, progress=None):
    """Waits until `pred()`, at most `timeout` s, or `quiet` s without `progress()` moving."""
    deadline = time.monotonic() + timeout
    last, moved = None, time.monotonic()
    while time.monotonic() < deadline:
        if pred():
            return True
        if quiet is not None:
            now_progress = progress()
            if now_progress != last:
                last, moved = now_progress, time.monotonic()
            elif time.monotonic() - moved > quiet:
                return False
        time.sleep(0.05)
    return pred()


def ranges(seqs, run_of):
    """`3-9 (run 2), 12 (run 3)`: sorted sequence numbers, consecutive ones acknowledged in the
    same broker run joined (at most 30 groups)."""
    parts = []
    i = 0
    while i < len(seqs):
        j = i
        while (j + 1 < len(seqs) and seqs[j + 1] == seqs[j] + 1
               and run_of[seqs[j + 1]] == run_of[seqs[i]]):
            j += 1
        span = str(seqs[i]) if i == j else f"{seqs[i]}-{seqs[j]}"
        parts.append(f"{span} (run {run_of[seqs[i]]})")
        i = j + 1
    more = f", ... {len(parts) - 30} more groups" if len(parts) > 30 else ""
    return ", ".join(parts[:30]) + more


def verdict(args, pubs, subs, kills, slow_stops, elapsed):
    """Prints the counts and returns the list of failures (empty when the contract held)."""
    failures = []
    sig = f"SIG{args.signal}"
    persistence = "off" if args.no_persistence else "on"
    print(f"\nbroker {args.broker}, persistence {persistence}, {kills} x {sig}, "
          f"{elapsed:.0f} s, seed {args.seed}")
    header = ("QoS", "published", "acknowledged", "subscriber", "received", "lost",
              "duplicated")
    print("%-4s %10s %13s %11s %9s %6s %11s" % header)
    for pub in pubs:
        acked = pub.acked
        ack_note = f"{len(acked)}"
        for sub in subs:
            got = {seq: a for (q, seq), a in sub.arrivals.items() if q == pub.qos}
            lost = sorted(set(acked) - set(got))
            dups = sorted(seq for seq, a in got.items() if len(a) > 1)
            ndup = sum(len(got[seq]) - 1 for seq in dups)
            print("%-4s %10d %13s %11s %9d %6d %11d" % (
                pub.qos, pub.published, ack_note, sub.label, len(got), len(lost), ndup))
            if lost:
                failures.append(f"QoS {pub.qos}: {len(lost)} acknowledged, never reached "
                                f"{sub.label}: {ranges(lost, acked)}")
            if pub.qos == 2:
                for seq in dups[:20]:
                    seen = ", ".join(f"packet id {mid}{' DUP' if dup else ''} in run {run}"
                                     for mid, dup, run in got[seq])
                    failures.append(f"QoS 2 seq {seq} reached {sub.label} {len(got[seq])} "
                                    f"times: {seen}")
                if len(dups) > 20:
                    failures.append(f"... and {len(dups) - 20} more QoS 2 duplicates for "
                                    f"{sub.label}")
            ghosts = sorted(seq for seq in got if seq > pub.seq)
            if ghosts:
                failures.append(f"{sub.label} received QoS {pub.qos} seqs never published: "
                                f"{ghosts[:10]}")
    for pub in pubs:
        unacked = pub.published - len(pub.acked)
        extra = f", {pub.completed} completed (PUBCOMP)" if pub.qos == 2 else ""
        # A PUBCOMP "packet identifier not found" answers a PUBREL re-sent for a flow the
        # broker had completed just before a stop.
        failed = collections.Counter(pub.refused.values())
        answers = "".join(f", {n} answered {reason!r}" for reason, n in sorted(failed.items()))
        print(f"QoS {pub.qos} publisher: {unacked} never acknowledged{answers}{extra}, "
              f"{pub.connects} connections")
    for sub in subs:
        print(f"subscriber {sub.label}: {sub.connects} connections, "
              f"{sub.sessions_lost} sessions lost by the broker")
        if sub.strangers:
            failures.append(f"{sub.label} received payloads it cannot parse: {sub.strangers[:3]}")
    if slow_stops:
        print(f"{slow_stops} SIGTERM stops took more than 30 s and were finished with SIGKILL")
    return failures


def self_check(args):
    """The verdict on made-up results: a lost QoS 1 message and a QoS 2 message delivered
    twice fail it, a QoS 1 message delivered twice does not. Returns the exit status."""
    def pub(qos, acked):
        return types.SimpleNamespace(qos=qos, published=3, seq=3, acked=acked, completed=0,
                                     refused={}, connects=1)

    def sub(twice_qos2=False):
        arrivals = {(1, 1): [(1, False, 1)], (1, 2): [(2, False, 1), (2, True, 2)],
                    (2, 1): [(1, False, 1)], (2, 2): [(2, False, 1)]}
        if twice_qos2:
            arrivals[(2, 2)].append((2, True, 2))
        return types.SimpleNamespace(label="check", connects=1, sessions_lost=0, strangers=[],
                                     arrivals=arrivals)

    both = {1: 1, 2: 1}
    cases = [
        ("all there, QoS 1 twice", [pub(1, both), pub(2, both)], sub(), 0),
        ("QoS 1 seq 3 lost", [pub(1, {1: 1, 2: 1, 3: 2}), pub(2, both)], sub(), 1),
        ("QoS 2 seq 2 twice", [pub(1, both), pub(2, both)], sub(twice_qos2=True), 1),
    ]
    wrong = 0
    for name, pubs, subscriber, want in cases:
        got = len(verdict(args, pubs, [subscriber], 0, 0, 0))
        if got != want:
            print(f"self-check: {name}: {got} failures, expected {want}")
            wrong += 1
    print("self-check: " + ("FAIL" if wrong else "ok"))
    return 1 if wrong else 0


def main():
    args = parse_args()
    if args.self_check:
        return self_check(args)
    rng = random.Random(args.seed)
    Paho.as_is = args.paho_as_is
    workdir = tempfile.mkdtemp(prefix="midge-torture-")
    broker = Broker(args, workdir)
    sig = signal.SIGKILL if args.signal == "KILL" else signal.SIGTERM
    log(f"{args.broker} ({broker.binary}) on port {broker.port}, {args.kills} x SIG{args.signal} "
        f"every {args.interval[0]}-{args.interval[1]} s, seed {args.seed}, in {workdir}")
    delay = 1.0 / (1.6 * args.rate)
    trace = workdir if args.trace else None
    pubs = [Publisher(1, mqtt.MQTTv311, broker.port, args.rate, trace),
            Publisher(2, mqtt.MQTTv5, broker.port, args.rate, trace)]
    subs = [Subscriber("v3.1.1", mqtt.MQTTv311, broker.port, delay, trace),
            Subscriber("v5", mqtt.MQTTv5, broker.port, delay, trace)]
    kills = slow_stops = 0
    failures = []
    started = time.monotonic()
    try:
        broker.start()
        Clock.run = broker.runs
        for sub in subs:
            sub.start()
        for sub in subs:
            if not sub.subscribed.wait(20):
                raise HarnessError(f"subscriber {sub.label} got no SUBACK")
        for pub in pubs:
            pub.start()
        while kills < args.kills:
            time.sleep(rng.uniform(*args.interval))
            for c in pubs + subs:
                if c.failure:
                    raise HarnessError(f"client {c.name} failed: {c.failure}")
            if not broker.stop(sig):
                slow_stops += 1
            kills += 1
            backlog = sum(pub.seq for pub in pubs) * len(subs) - sum(sub.count for sub in subs)
            log(f"stop {kills}/{args.kills}: about {max(backlog, 0)} deliveries outstanding")
            broker.start()
            Clock.run = broker.runs
        # Drain: no new messages; every publish gets its acknowledgement, then the subscribers
        # catch up (or stop receiving anything for 10 s, which is where a loss shows).
        for pub in pubs:
            pub.publishing = False
        log("draining")
        if not wait_until(lambda: all(not p.pending for p in pubs), 60):
            log("some publishes were never acknowledged within 60 s")

        def missing():
            return sum(len(p.acked_now() - sub.received(p.qos)) for p in pubs for sub in subs)

        wait_until(lambda: missing() == 0, 600, quiet=10,
                   progress=lambda: sum(sub.count for sub in subs))
        # A duplicate would come right behind: give it a moment.
        time.sleep(1)
        for c in pubs + subs:
            c.stopping = True
        for c in pubs + subs:
            c.join(5)
        broker.stop(signal.SIGTERM)
        if sum(len(p.acked) for p in pubs) == 0:
            raise HarnessError("the broker acknowledged nothing")
        failures = verdict(args, pubs, subs, kills, slow_stops, time.monotonic() - started)
    except HarnessError as e:
        print(f"torture: cannot run: {e}", file=sys.stderr)
        for c in pubs + subs:
            c.stopping = True
        if broker.proc is not None:
            broker.proc.kill()
            broker.proc.wait()
        print(f"torture: kept {workdir}", file=sys.stderr)
        return 2
    if failures:
        print("\nverdict: FAIL")
        for f in failures:
            print(f"  {f}")
        if args.discard:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"broker directory kept: {workdir} (--seed {args.seed} repeats the stop "
                  f"intervals)")
        return 1
    print("\nverdict: PASS (nothing acknowledged was lost, no QoS 2 message twice)")
    if args.keep or args.trace:
        print(f"broker directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
