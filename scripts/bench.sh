#!/usr/bin/env bash
# Side-by-side benchmark: midge vs Mosquitto (Debian package) vs rumqttd (cargo install).
#
# Each broker runs pinned to core 0 (taskset -c 0), the load generator (midge-bench) to core 1.
# Every run starts a fresh broker, so its peak RSS (VmHWM) and CPU time (utime+stime) belong to
# that run alone. Brokers alternate A B C A B C ... so a noisy neighbour hits them all alike;
# each scenario prints the median per broker and the ratio midge/peer.
#
# Usage: scripts/bench.sh [--quick] [--rounds N] [--duration S] [--brokers "midge mosquitto rumqttd"]
#                         [--scenarios "fanin0 fanout0 ..."] [--out DIR]
#                         [--midge-a PATH --midge-b PATH]
#   --quick   one round, 2-second runs (a smoke test of the whole pipeline, about 1 minute)
#   --brokers may also name "forward": midge-bench's forwarding server, the generator's ceiling
#             (message scenarios only; it keeps no retained messages), and "control":
#             midge-bench's sessions-server, the least a broker can do for sessions100 and
#             sessions1000 (one list of messages sent to each returning session, 20 in
#             flight), to show how much of a drain's growth is the machine's.
#   --midge-a, --midge-b  compare two midge binaries (say main's and a branch's) under one
#             generator build: they run as brokers "midge-a" and "midge-b", alternating like the
#             others, and each scenario also prints the ratio b/a. Without --brokers only these
#             two run; name them in --brokers to add Mosquitto or rumqttd.
#   --idle-secs S  how long idledisk measures an idle broker's disk writes (default 30; --quick 10)
#   --ack-rate R   ackmem/ackdisk's offered load in msg/s for every broker, instead of half of
#             its p2p1mem rate (a load fixed across runs, or one a busy machine carries)
#   --conf LINE    one more configuration line for midge and Mosquitto in every scenario (say
#             "max_inflight_messages 200"); the summary's header names it
# Scenarios: fanin0 fanout0 p2p1 fanin2 latency idle retained connstorm (default: all), and the
# persistence scenarios (midge and Mosquitto only; not in the default set):
#   p2p1mem   QoS 1 pairs with persistent sessions, persistence off
#   p2p1disk  the same with persistence on: msg/s, and bytes written per delivered message
#             (write_bytes of /proc/PID/io over the run and the 2 s after it)
#   idledisk  persistence on, 10 persistent mosquitto_sub clients connected, default
#             sys_interval: bytes written per minute once start-up has settled
#   ackmem    QoS 1 pairs as p2p1mem at half load: offered half of the broker's median
#             p2p1mem rate in this run (run p2p1mem first), else ACK_RATE msg/s (20000):
#             PUBACK latency p50/p99 (from writing a PUBLISH to reading its PUBACK)
#   ackdisk   the same with persistence on; the summary gives p99 on minus off
# Scale scenarios (not in the default set; `--scenarios scale` runs them all, about 15 minutes
# for three brokers), each at two sizes; the summary gives the growth from the small to the
# large one:
#   replay100k replay1m    retained replay of N home topics (sensors/N/ROOM, ~20 B, 64 B
#                          payload) to a new '#' subscriber: time, delivered, peak RSS, and RSS
#                          per retained message at rest (before the replay)
#   narrow100k narrow1m    the same to 'sensors/+/kitchen/#' (one topic in eight)
#   idle2k idle18k         RSS per idle connection
#   storm2k storm18k       N connections opened 64 at a time and held: connections/s
#   cost-SHAPE-10k cost-SHAPE-100k  (SHAPE: exact plus hash mix) 100 clients hold N
#                          subscriptions of that shape; 20000 publishes each matching one; the
#                          broker runs under valgrind's callgrind, and the figure is its
#                          instructions per delivered message (counters read with
#                          callgrind_control -e before and after the publishing phase)
#   sessions100 sessions1000  N offline persistent sessions with 1000 queued QoS 1 messages
#                          each reconnect at once: time to drain, peak RSS; persistence off
#   sessions100disk sessions1000disk  the same with persistence on (midge and Mosquitto)
# Not a pass/fail test: never run it in CI. Loopback only.
set -euo pipefail

CALLER_DIR=$PWD
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=3
DURATION=10
QUICK=0
BROKERS="midge mosquitto rumqttd"
SCENARIOS="fanin0 fanout0 p2p1 fanin2 latency idle retained connstorm"
IDLE_SECS=30
ACK_RATE_FIXED=""
EXTRA_CONF=""
OUT=""
MIDGE_A=""
MIDGE_B=""
BROKERS_GIVEN=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; ROUNDS=1; DURATION=2; IDLE_SECS=10 ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --brokers) BROKERS=$2; BROKERS_GIVEN=1; shift ;;
        --scenarios) SCENARIOS=$2; shift ;;
        --out) OUT=$2; shift ;;
        --idle-secs) IDLE_SECS=$2; shift ;;
        --midge-a) MIDGE_A=$2; shift ;;
        --midge-b) MIDGE_B=$2; shift ;;
        --ack-rate) ACK_RATE_FIXED=$2; shift ;;
        --conf) EXTRA_CONF=$2; shift ;;
        -h|--help) sed -n '2,50p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
SCALE_SCENARIOS="replay100k replay1m narrow100k narrow1m idle2k idle18k storm2k storm18k"
for shape in exact plus hash mix; do SCALE_SCENARIOS="$SCALE_SCENARIOS cost-$shape-10k cost-$shape-100k"; done
SCALE_SCENARIOS="$SCALE_SCENARIOS sessions100 sessions1000 sessions100disk sessions1000disk"
s=""
for scen in $SCENARIOS; do if [ "$scen" = scale ]; then s="$s $SCALE_SCENARIOS"; else s="$s $scen"; fi; done
SCENARIOS=${s# }
if [ -n "$MIDGE_A$MIDGE_B" ]; then
    [ -n "$MIDGE_A" ] && [ -n "$MIDGE_B" ] || { echo "bench.sh: --midge-a and --midge-b go together" >&2; exit 2; }
    # Paths are relative to where the script was called from, not to the checkout.
    MIDGE_A=$(cd "$CALLER_DIR" && realpath -e "$MIDGE_A") || exit 2
    MIDGE_B=$(cd "$CALLER_DIR" && realpath -e "$MIDGE_B") || exit 2
    [ "$BROKERS_GIVEN" = 1 ] || BROKERS="midge-a midge-b"
fi
OUT=${OUT:-$ROOT/target/bench/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
RESULTS=$OUT/results.tsv
: > "$RESULTS"
BENCH=$ROOT/target/release/midge-bench
MIDGE=$ROOT/target/release/midge
RUMQTTD=$ROOT/bench-tools/bin/rumqttd
MOSQUITTO=/usr/sbin/mosquitto

log() { echo "[bench] $*" >&2; }

# --- tools ---------------------------------------------------------------------------------
if [[ " $BROKERS " != *" midge "* ]]; then
    # --midge-a/--midge-b bring their own binaries: only the generator is built.
    log "building midge-bench (release)"
    cargo build --release -p midge-bench >"$OUT/build.log" 2>&1
else
    log "building midge and midge-bench (release)"
    if ! cargo build --release -p midge --bin midge -p midge-bench --bin midge-bench >"$OUT/build.log" 2>&1; then
        log "midge does not build yet (see $OUT/build.log); building midge-bench alone"
        cargo build --release -p midge-bench >>"$OUT/build.log" 2>&1
    fi
fi
if [[ " $BROKERS " == *" rumqttd "* ]] && [ ! -x "$RUMQTTD" ]; then
    log "installing rumqttd into ./bench-tools (takes a few minutes)"
    cargo install rumqttd --root "$ROOT/bench-tools" >"$OUT/rumqttd-install.log" 2>&1
fi
if [[ " $BROKERS " == *" mosquitto "* ]] && [ ! -x "$MOSQUITTO" ]; then
    log "installing Debian's mosquitto"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get install -y mosquitto >"$OUT/mosquitto-install.log" 2>&1
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true   # thousands of idle connections
command -v taskset >/dev/null || { log "taskset (util-linux) is required"; exit 1; }

# --- brokers -------------------------------------------------------------------------------
free_port() {
    local p
    for p in $(shuf -i 20000-29999 -n 100); do
        if [ -z "$(ss -Htln "sport = :$p")" ]; then echo "$p"; return; fi
    done
    return 1
}

wait_listen() { # port pid
    local i
    # valgrind takes seconds to start a broker.
    for i in $(seq 1 $([ "$CALLGRIND" = 1 ] && echo 1200 || echo 100)); do
        [ -n "$(ss -Htln "sport = :$1")" ] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

midge_bin() { # NAME: the binary behind broker midge, midge-a or midge-b
    case "$1" in
        midge-a) echo "$MIDGE_A" ;;
        midge-b) echo "$MIDGE_B" ;;
        *) echo "$MIDGE" ;;
    esac
}

BROKER_PID=""
# With CALLGRIND=1 the broker runs under valgrind's callgrind (as root: a broker that drops to
# another user cannot open valgrind's control FIFO). Its peak RSS is then valgrind's.
CALLGRIND=0
run_as() { [ "$CALLGRIND" = 1 ] && printf 'user root\n'; return 0; }
extra_conf() { [ -n "$EXTRA_CONF" ] && printf '%s\n' "$EXTRA_CONF"; return 0; }
under() { # the command prefix a broker runs under
    if [ "$CALLGRIND" = 1 ]; then
        echo "taskset -c 0 valgrind --tool=callgrind --callgrind-out-file=$OUT/callgrind.out.%p"
    else
        echo "taskset -c 0"
    fi
}
# With STORE_DIR set, midge and Mosquitto run with `persistence true` and their file there
# (world-writable: run as root, both drop to the user mosquitto).
STORE_DIR=""
persistence_conf() {
    [ -n "$STORE_DIR" ] || return 0
    printf 'persistence true\npersistence_location %s/\n' "$STORE_DIR"
}
# start_broker NAME PORT LOGFILE: starts NAME pinned to core 0, sets BROKER_PID.
start_broker() {
    local name=$1 port=$2 logf=$3 conf=$OUT/$1.conf
    [ "$name" = rumqttd ] && conf=$OUT/rumqttd.toml # rumqttd picks the format by extension
    case "$name" in
        midge|midge-a|midge-b)
            { printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port"; persistence_conf; run_as; extra_conf; } >"$conf"
            # shellcheck disable=SC2046
            $(under) "$(midge_bin "$name")" -c "$conf" >"$logf" 2>&1 &
            ;;
        mosquitto)
            { printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port"; persistence_conf; run_as; extra_conf; } >"$conf"
            # shellcheck disable=SC2046
            $(under) "$MOSQUITTO" -c "$conf" >"$logf" 2>&1 &
            ;;
        rumqttd)
            # rumqttd 0.20's format (its own rumqttd.toml demo), one plain-TCP v4 listener with
            # its shipped limits (max_inflight_count 100, as the demo config; midge and Mosquitto
            # keep 20), no connection-rate delay and room for 20000 clients.
            cat >"$conf" <<EOF
id = 0

[router]
id = 0
max_connections = 20000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$port"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true
EOF
            # shellcheck disable=SC2046
            $(under) "$RUMQTTD" -q -c "$conf" >"$logf" 2>&1 &
            ;;
        forward)
            # Not a broker: midge-bench's byte-forwarding server, the generator's ceiling.
            taskset -c 0 "$BENCH" forward-server --port "$port" >"$logf" 2>&1 &
            ;;
        control)
            # Not a broker either: the floor of the offline-sessions drain (bench/src/drain.rs).
            taskset -c 0 "$BENCH" sessions-server --port "$port" >"$logf" 2>&1 &
            ;;
        *) log "unknown broker $name"; return 1 ;;
    esac
    BROKER_PID=$!
    if ! wait_listen "$port" "$BROKER_PID"; then
        stop_broker
        return 1
    fi
}

stop_broker() {
    [ -n "$BROKER_PID" ] || return 0
    kill "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
}
trap stop_broker EXIT INT TERM

hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo NA; }
# Bytes the process (all its threads) sent towards the disk so far.
write_bytes() { awk '/^write_bytes:/ {print $2}' "/proc/$1/io" 2>/dev/null || echo NA; }
cpu_ms() { # utime+stime (fields 14, 15 of /proc/PID/stat) in ms
    local tck; tck=$(getconf CLK_TCK)
    [ -r "/proc/$1/stat" ] || { echo NA; return; }
    sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk -v t="$tck" '{print int(($12+$13)*1000/t)}' || echo NA
}

# Which brokers can run at all (midge may not be finished yet).
AVAILABLE=""
for b in $BROKERS; do
    port=$(free_port)
    case "$b" in
        midge|midge-a|midge-b) [ -x "$(midge_bin "$b")" ] || { log "$b: no binary, skipped"; continue; } ;;
        mosquitto) [ -x "$MOSQUITTO" ] || { log "mosquitto: not installed, skipped"; continue; } ;;
        rumqttd) [ -x "$RUMQTTD" ] || { log "rumqttd: not installed, skipped"; continue; } ;;
        forward|control) ;;
    esac
    if start_broker "$b" "$port" "$OUT/$b-probe.log"; then
        AVAILABLE="$AVAILABLE $b"
        stop_broker
    else
        log "$b: did not listen on 127.0.0.1:$port within 5 s, skipped (see $OUT/$b-probe.log)"
    fi
done
[ -n "$AVAILABLE" ] || { log "no broker available"; exit 1; }
log "brokers: $AVAILABLE; rounds: $ROUNDS; duration: ${DURATION}s; output: $OUT"

# --- scenarios -----------------------------------------------------------------------------
# args SCENARIO: the generator's arguments. metric SCENARIO: the RESULT key compared.
LATENCY_RATE=50000
# Offered load of ackmem/ackdisk without a p2p1mem figure for the broker: one both midge and
# Mosquitto carry with persistence on.
ACK_RATE=20000
# ack_rate BROKER: --ack-rate, else half of BROKER's median p2p1mem rate in this run, else
# ACK_RATE.
ack_rate() {
    local m
    [ -z "$ACK_RATE_FIXED" ] || { echo "$ACK_RATE_FIXED"; return; }
    m=$(awk -F'\t' -v b="$1" '$1=="p2p1mem" && $2==b && $4!="NA" {print $4}' "$RESULTS" | median)
    if [ "$m" = NA ]; then echo "$ACK_RATE"; else awk -v m="$m" 'BEGIN {printf "%d", m/2}'; fi
}
args() { # SCENARIO BROKER
    case "$1" in
        fanin0) echo "fanin --qos 0 --pubs 8 --size 64 --duration $DURATION" ;;
        fanout0) echo "fanout --qos 0 --subs 100 --size 64 --duration $DURATION" ;;
        p2p1) echo "p2p --qos 1 --pairs 32 --size 256 --duration $DURATION" ;;
        fanin2) echo "fanin --qos 2 --pubs 8 --size 64 --duration $DURATION" ;;
        latency) echo "fanin --qos 0 --pubs 8 --size 64 --duration $DURATION --rate $LATENCY_RATE" ;;
        idle) if [ "$QUICK" = 1 ]; then echo "idle --conns 5000 --wait 1"; else echo "idle --conns 5000 --wait 3"; fi ;;
        retained) echo "retained --count 10000 --size 64" ;;
        connstorm) echo "connstorm --parallel 8 --duration $DURATION" ;;
        p2p1mem|p2p1disk) echo "p2p --qos 1 --pairs 32 --size 256 --duration $DURATION" ;;
        ackmem|ackdisk) echo "p2p --qos 1 --pairs 32 --size 256 --duration $DURATION --rate $(ack_rate "$2")" ;;
        replay*|narrow*)
            local f="#"; [ "${1#narrow}" = "$1" ] || f="sensors/+/kitchen/#"
            echo "retained --topics home --count $(scale_size "$1") --size 64 --filter $f" ;;
        idle2k|idle18k) echo "idle --conns $(scale_size "$1") --wait 3" ;;
        storm*) echo "connstorm --conns $(scale_size "$1") --parallel 64" ;;
        cost-*) local shape=${1#cost-}; shape=${shape%-*}
            echo "subcost --shape $shape --subs 100 --filters $(scale_size "$1") --publishes 20000 --callgrind" ;;
        sessions*) echo "sessions --sessions $(scale_size "$1") --count 1000 --size 64" ;;
    esac
}
# scale_size SCENARIO: the size in a scale scenario's name (1m = 1000000, 18k = 18000, 100 = 100).
scale_size() {
    local n
    n=$(echo "$1" | grep -o '[0-9][0-9]*[km]\?' | tail -1)
    case "$n" in *m) echo $(( ${n%m} * 1000000 )) ;; *k) echo $(( ${n%k} * 1000 )) ;; *) echo "$n" ;; esac
}
is_scale() { case "$1" in replay*|narrow*|idle2k|idle18k|storm*|cost-*|sessions*) return 0 ;; *) return 1 ;; esac; }
# scale_base SCENARIO: the small size of a large scale scenario (nothing for the others).
scale_base() {
    case "$1" in
        replay1m) echo replay100k ;;
        narrow1m) echo narrow100k ;;
        idle18k) echo idle2k ;;
        storm18k) echo storm2k ;;
        cost-*-100k) echo "${1%-100k}-10k" ;;
        sessions1000) echo sessions100 ;;
        sessions1000disk) echo sessions100disk ;;
    esac
}
# Scale scenarios' second figures: what was delivered or held, and the cost per unit.
count_key() { case "$1" in idle*) echo conns ;; storm*) echo connected ;; *) echo delivered ;; esac; }
unit_key() {
    case "$1" in
        replay*|narrow*) echo bytes_per_retained ;;
        idle*) echo rss_after_kb ;;
        storm*) echo time_ms ;;
        cost-*) echo bytes_per_filter ;;
        sessions*) echo bytes_per_queued ;;
    esac
}
# Scenarios that need a broker's store: only midge and Mosquitto have one.
is_disk() { case "$1" in p2p1mem|p2p1disk|idledisk|ackmem|ackdisk|sessions*disk) return 0 ;; *) return 1 ;; esac; }
# Scenarios that run with persistence on.
stores() { case "$1" in p2p1disk|idledisk|ackdisk|sessions*disk) return 0 ;; *) return 1 ;; esac; }
has_store() { case "$1" in midge|midge-a|midge-b|mosquitto) return 0 ;; *) return 1 ;; esac; }
# skips SCENARIO BROKER: true if BROKER cannot run SCENARIO (no store, or the control server
# outside the in-memory sessions scenarios).
skips() {
    if is_disk "$1" && ! has_store "$2"; then return 0; fi
    case "$2:$1" in control:sessions100|control:sessions1000) return 1 ;; control:*) return 0 ;; esac
    return 1
}
metric() {
    case "$1" in
        latency) echo p99_us ;;
        idle) echo bytes_per_conn ;;
        idledisk) echo bytes_per_min ;;
        ackmem|ackdisk) echo ack_p99_us ;;
        replay*|narrow*|sessions*) echo time_ms ;;
        idle2k|idle18k) echo bytes_per_conn ;;
        cost-*) echo ir_per_msg ;;
        *) echo rate ;;
    esac
}
describe() {
    case "$1" in
        fanin0) echo "QoS 0 fan-in, 8 pubs -> 1 sub, 64 B (msg/s)" ;;
        fanout0) echo "QoS 0 fan-out, 1 pub -> 100 subs, 64 B (deliveries/s)" ;;
        p2p1) echo "QoS 1 point-to-point, 32 pairs, 256 B (msg/s)" ;;
        fanin2) echo "QoS 2 fan-in, 8 pubs -> 1 sub, 64 B (msg/s)" ;;
        latency) echo "p99 latency, QoS 0 fan-in at $LATENCY_RATE msg/s offered (us, lower is better)" ;;
        idle) echo "RSS per idle connection, 5000 connections (bytes, lower is better)" ;;
        retained) echo "retained replay, 10000 topics -> new '#' subscriber (msg/s)" ;;
        connstorm) echo "connection storm (connect/CONNACK/DISCONNECT per s)" ;;
        p2p1mem) echo "QoS 1 point-to-point, 32 pairs, 256 B, persistent sessions, persistence off (msg/s)" ;;
        p2p1disk) echo "QoS 1 point-to-point, 32 pairs, 256 B, persistent sessions, persistence on (msg/s)" ;;
        idledisk) echo "idle broker, persistence on, 10 persistent clients, default sys_interval (bytes written per minute, lower is better)" ;;
        ackmem) echo "PUBACK latency p99, QoS 1 pairs at half load, persistent sessions, persistence off (us, lower is better)" ;;
        ackdisk) echo "PUBACK latency p99, QoS 1 pairs at half load, persistent sessions, persistence on (us, lower is better)" ;;
        replay*) echo "retained replay, $(scale_size "$1") home topics -> new '#' subscriber (ms; per unit: RSS per retained message at rest, B)" ;;
        narrow*) echo "retained replay, $(scale_size "$1") home topics -> new 'sensors/+/kitchen/#' subscriber (ms; per unit: RSS per retained message at rest, B)" ;;
        idle2k|idle18k) echo "RSS per idle connection, $(scale_size "$1") connections (bytes; per unit: RSS with all open, kB)" ;;
        storm*) echo "connection storm, $(scale_size "$1") connections held, 64 handshakes at a time (connections/s; per unit: ms)" ;;
        cost-*) echo "publish cost, 100 clients, $(scale_size "$1") '$(echo "$1" | cut -d- -f2)' subscriptions, 20000 publishes each matching one (instructions per delivery under callgrind; per unit: RSS per subscription, B)" ;;
        sessions*disk) echo "$(scale_size "$1") offline persistent sessions x 1000 queued QoS 1 reconnect at once, persistence on (ms to drain; per unit: RSS per queued message, B)" ;;
        sessions*) echo "$(scale_size "$1") offline persistent sessions x 1000 queued QoS 1 reconnect at once, persistence off (ms to drain; per unit: RSS per queued message, B)" ;;
    esac
}
field() { # field KEY LINE
    local kv
    for kv in $2; do [ "${kv%%=*}" = "$1" ] && { echo "${kv#*=}"; return; }; done
    echo NA
}

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) {print "NA"} else if (NR%2) {print v[(NR+1)/2]} else {printf "%.10g\n", (v[NR/2]+v[NR/2+1])/2}}'; }

# idle_disk PORT LABEL: 10 persistent mosquitto_sub clients (keepalive 10 s) on the broker,
# start-up settled for 5 s, then the broker's disk writes over IDLE_SECS; prints a RESULT line.
idle_disk() {
    local port=$1 label=$2 i w0 w1 pids=""
    for i in $(seq 1 10); do
        taskset -c 1 mosquitto_sub -h 127.0.0.1 -p "$port" -c -i "bench-idle-$i" -q 1 \
            -t "bench/idle/$i" -k 10 >/dev/null 2>&1 &
        pids="$pids $!"
    done
    sleep 5
    w0=$(write_bytes "$BROKER_PID")
    sleep "$IDLE_SECS"
    w1=$(write_bytes "$BROKER_PID")
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
    # shellcheck disable=SC2086
    wait $pids 2>/dev/null || true
    awk -v a="$w0" -v b="$w1" -v s="$IDLE_SECS" -v l="$label" 'BEGIN {
        if (a == "NA" || b == "NA") exit 1;
        printf "RESULT scenario=idledisk clients=10 secs=%d write_bytes=%d bytes_per_min=%.0f label=%s\n", s, b - a, (b - a) * 60 / s, l }'
}

run_one() { # scenario broker round
    local scen=$1 b=$2 round=$3 port line hwm cpu gen load w0 w1 status=ok
    port=$(free_port)
    STORE_DIR=""
    if stores "$scen"; then
        STORE_DIR=$OUT/store-$b-$scen-$round
        mkdir -p "$STORE_DIR" && chmod 0777 "$STORE_DIR"
    fi
    CALLGRIND=0
    case "$scen" in cost-*) CALLGRIND=1 ;; esac
    if ! start_broker "$b" "$port" "$OUT/$b-$scen-$round.log"; then
        log "$scen $b round $round: broker did not start"
        printf '%s\t%s\t%s\tNA\tNA\tNA\tNA\tNA\tbroker-failed\tNA\tNA\tNA\tNA\tNA\n' "$scen" "$b" "$round" >>"$RESULTS"
        return
    fi
    gen=$(args "$scen" "$b")
    case "$scen" in idle|replay*|narrow*|idle2k|idle18k|cost-*|sessions*) gen="$gen --pid $BROKER_PID" ;; esac
    local limit=$((DURATION + 90))
    is_scale "$scen" && limit=600
    if [ "$scen" = idledisk ]; then
        line=$(idle_disk "$port" "$b" 2>"$OUT/gen-$b-$scen-$round.err" || true)
    else
        w0=$(write_bytes "$BROKER_PID")
        # Persistent sessions (clean session 0) for the persistence scenarios.
        # shellcheck disable=SC2086
        line=$(MIDGE_BENCH_PERSISTENT=$(is_disk "$scen" && echo 1 || echo 0) \
            timeout "$limit" taskset -c 1 "$BENCH" $gen --port "$port" --label "$b" \
            2>"$OUT/gen-$b-$scen-$round.err" | grep '^RESULT' || true)
        if is_disk "$scen" && [ -n "$line" ]; then
            # The last commits' sync (and checkpoint) belongs to the run.
            sleep 2
            w1=$(write_bytes "$BROKER_PID")
            line="$line $(awk -v a="$w0" -v b="$w1" -v n="$(field received "$line")" 'BEGIN {
                if (a == "NA" || b == "NA" || n == "NA" || n == 0) print "bytes_per_msg=NA";
                else printf "write_bytes=%d bytes_per_msg=%.1f\n", b - a, (b - a) / n }')"
        fi
    fi
    hwm=$(hwm_kb "$BROKER_PID")
    cpu=$(cpu_ms "$BROKER_PID")
    [ "$CALLGRIND" = 1 ] && hwm=NA # valgrind's memory, not the broker's
    stop_broker
    CALLGRIND=0
    rm -f "$OUT"/callgrind.out.*
    [ -n "$STORE_DIR" ] && rm -rf "$STORE_DIR"
    STORE_DIR=""
    if [ -z "$line" ]; then
        status="generator-failed:$(tr '\n' ' ' <"$OUT/gen-$b-$scen-$round.err" | cut -c1-120)"
    fi
    echo "$line" >>"$OUT/raw.txt"
    load=$(cut -d' ' -f1 /proc/loadavg)
    # Columns: scenario broker round metric lost dup hwm cpu status load bytes_per_msg
    # ack_p50_us offered rate (the last three from QoS 1 runs only) count unit (scale scenarios).
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scen" "$b" "$round" \
        "$(field "$(metric "$scen")" "$line")" "$(field lost "$line")" "$(field dup "$line")" \
        "$hwm" "$cpu" "$status" "$load" "$(field bytes_per_msg "$line")" \
        "$(field ack_p50_us "$line")" "$(field offered "$line")" "$(field rate "$line")" \
        "$(field "$(count_key "$scen")" "$line")" "$(field "$(unit_key "$scen")" "$line")" >>"$RESULTS"
    log "$scen $b round $round: $(metric "$scen")=$(field "$(metric "$scen")" "$line") lost=$(field lost "$line") bytes/msg=$(field bytes_per_msg "$line") hwm=${hwm}kB cpu=${cpu}ms load=$load $status"
}

START=$(date +%s)
STARTED=$(date -u "+%Y-%m-%d %H:%M UTC")
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for scen in $SCENARIOS; do
    if [ "$scen" = latency ]; then
        # Half of Mosquitto's maximum fan-in rate from this run: a load both can carry.
        m=$(awk -F'\t' '$1=="fanin0" && $2=="mosquitto" && $4!="NA" {print $4}' "$RESULTS" | median)
        if [ "$m" != NA ]; then LATENCY_RATE=$(awk -v m="$m" 'BEGIN {printf "%d", m/2}'); fi
    fi
    if [ "$scen" = idledisk ] && ! command -v mosquitto_sub >/dev/null; then
        log "idledisk: mosquitto_sub (mosquitto-clients) is missing, skipped"
        continue
    fi
    # ackmem/ackdisk and p2p1mem/p2p1disk alternate within each round when both of a pair are
    # asked: their ratio or difference is the figure, so a load (or a VM's speed) that drifts
    # during the run must hit both alike.
    runs=$scen
    if [ "$scen" = ackmem ] && [[ " $SCENARIOS " == *" ackdisk "* ]]; then runs="ackmem ackdisk"; fi
    if [ "$scen" = ackdisk ] && [[ " $SCENARIOS " == *" ackmem "* ]]; then continue; fi
    if [ "$scen" = p2p1mem ] && [[ " $SCENARIOS " == *" p2p1disk "* ]]; then runs="p2p1mem p2p1disk"; fi
    if [ "$scen" = p2p1disk ] && [[ " $SCENARIOS " == *" p2p1mem "* ]]; then continue; fi
    for round in $(seq 1 "$ROUNDS"); do
        for s in $runs; do
            for b in $AVAILABLE; do
                if skips "$s" "$b"; then continue; fi
                run_one "$s" "$b" "$round"
            done
        done
    done
done

# --- summary -------------------------------------------------------------------------------
{
    echo "# midge benchmark, started $STARTED, $(nproc) cores, $(uname -r)"
    echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    [ -x "$MOSQUITTO" ] && echo "# $($MOSQUITTO -h 2>/dev/null | head -1)"
    [ -x "$RUMQTTD" ] && echo "# $($RUMQTTD -V 2>/dev/null)"
    [ -n "$MIDGE_A" ] && echo "# midge-a: $MIDGE_A (sha256 $(sha256sum "$MIDGE_A" | cut -c1-12))"
    [ -n "$MIDGE_B" ] && echo "# midge-b: $MIDGE_B (sha256 $(sha256sum "$MIDGE_B" | cut -c1-12))"
    echo "# rounds=$ROUNDS duration=${DURATION}s; medians; brokers on core 0, generator on core 1"
    [ -n "$EXTRA_CONF" ] && echo "# midge and Mosquitto configured with: $EXTRA_CONF"
    echo "# load average at start: $LOAD_START; at end: $(cut -d' ' -f1-3 /proc/loadavg) (above ~0.5 the machine was shared)"
    echo
    for scen in $SCENARIOS; do
        echo "## $(describe "$scen")"
        if is_scale "$scen"; then
            printf '| broker | median | delivered/held | lost | per unit | peak RSS (kB) | CPU (ms) | load | runs |\n|---|---|---|---|---|---|---|---|---|\n'
            for b in $AVAILABLE; do
                if skips "$scen" "$b"; then continue; fi
                sel() { awk -F'\t' -v s="$scen" -v b="$b" -v c="$1" '$1==s && $2==b && $c!="NA" && $c!="" {print $c}' "$RESULTS"; }
                printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$b" "$(sel 4 | median)" "$(sel 15 | median)" \
                    "$(sel 5 | median)" "$(sel 16 | median)" "$(sel 7 | median)" "$(sel 8 | median)" "$(sel 10 | median)" "$(sel 4 | wc -l)/$ROUNDS"
            done
            base=$(scale_base "$scen")
            if [ -n "$base" ]; then
                for b in $AVAILABLE; do
                    if skips "$scen" "$b"; then continue; fi
                    med() { awk -F'\t' -v s="$1" -v b="$b" -v c="$2" '$1==s && $2==b && $c!="NA" && $c!="" {print $c}' "$RESULTS" | median; }
                    awk -v b="$b" -v base="$base" -v size="$(( $(scale_size "$scen") / $(scale_size "$base") ))" \
                        -v m0="$(med "$base" 4)" -v m1="$(med "$scen" 4)" -v r0="$(med "$base" 7)" -v r1="$(med "$scen" 7)" \
                        -v c0="$(med "$base" 8)" -v c1="$(med "$scen" 8)" 'BEGIN {
                        g = (m0 == "NA" || m1 == "NA" || m0 == 0) ? "n/a" : sprintf("%.2f", m1 / m0);
                        h = (r0 == "NA" || r1 == "NA" || r0 == 0) ? "n/a" : sprintf("%.2f", r1 / r0);
                        # The broker CPU of the whole run, work done after the figure included (a
                        # store writer still deleting what a short drain delivered).
                        k = (c0 == "NA" || c1 == "NA" || c0 == 0) ? "n/a" : sprintf("%.2f", c1 / c0);
                        printf "%s: growth from %s (%dx the work): figure x%s, CPU x%s, peak RSS x%s\n", b, base, size, g, k, h }'
                done
            fi
            echo
            continue
        fi
        printf '| broker | median | lost | dup | peak RSS (kB) | CPU (ms) | runs |\n|---|---|---|---|---|---|---|\n'
        for b in $AVAILABLE; do
            if skips "$scen" "$b"; then continue; fi
            sel() { awk -F'\t' -v s="$scen" -v b="$b" -v c="$1" '$1==s && $2==b && $c!="NA" && $c!="" {print $c}' "$RESULTS"; }
            printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$b" "$(sel 4 | median)" "$(sel 5 | median)" \
                "$(sel 6 | median)" "$(sel 7 | median)" "$(sel 8 | median)" "$(sel 4 | wc -l)/$ROUNDS"
        done
        if [ "$scen" = p2p1mem ] || [ "$scen" = p2p1disk ] || [ "$scen" = ackdisk ]; then
            for b in $AVAILABLE; do
                has_store "$b" || continue
                echo "$b: bytes written per delivered message (median): $(awk -F'\t' -v s="$scen" -v b="$b" \
                    '$1==s && $2==b && $11!="NA" && $11!="" {print $11}' "$RESULTS" | median)"
            done
        fi
        if [ "$scen" = p2p1disk ]; then
            for b in $AVAILABLE; do
                has_store "$b" || continue
                on=$(awk -F'\t' -v b="$b" '$1=="p2p1disk" && $2==b && $4!="NA" {print $4}' "$RESULTS" | median)
                off=$(awk -F'\t' -v b="$b" '$1=="p2p1mem" && $2==b && $4!="NA" {print $4}' "$RESULTS" | median)
                awk -v on="$on" -v off="$off" -v b="$b" 'BEGIN {
                    if (on == "NA" || off == "NA" || off == 0) print b ": persistence on/off: n/a (run p2p1mem too)";
                    else printf "%s: persistence on/off: %.2f of the in-memory rate\n", b, on / off }'
                # The rounds ran in pairs (mem then disk): each pair's ratio, free of drift.
                awk -F'\t' -v b="$b" '$2==b && $4!="NA" && ($1=="p2p1mem" || $1=="p2p1disk") { v[$1, $3] = $4; r[$3] = 1 }
                    END { n = 0; for (k in r) if (v["p2p1mem", k] > 0 && (("p2p1disk", k) in v)) { n++; q[n] = v["p2p1disk", k] / v["p2p1mem", k] }
                        if (n == 0) exit; for (i = 2; i <= n; i++) for (j = i; j > 1 && q[j - 1] > q[j]; j--) { t = q[j]; q[j] = q[j - 1]; q[j - 1] = t }; s = ""; for (i = 1; i <= n; i++) s = s sprintf(" %.2f", q[i])
                        printf "%s: persistence on/off per round (sorted):%s; median %.2f\n", b, s, (n % 2) ? q[(n + 1) / 2] : (q[n / 2] + q[n / 2 + 1]) / 2 }' "$RESULTS"
            done
        fi
        if [ "$scen" = ackmem ] || [ "$scen" = ackdisk ]; then
            for b in $AVAILABLE; do
                has_store "$b" || continue
                col() { awk -F'\t' -v s="$scen" -v b="$b" -v c="$1" '$1==s && $2==b && $c!="NA" && $c!="" {print $c}' "$RESULTS" | median; }
                awk -v b="$b" -v o="$(col 13)" -v r="$(col 14)" -v p50="$(col 12)" -v p99="$(col 4)" 'BEGIN {
                    if (p99 == "NA") { print b ": PUBACK latency: n/a"; exit }
                    printf "%s: offered %s msg/s, delivered %s msg/s; PUBACK p50 %.2f ms, p99 %.2f ms (medians)%s\n",
                        b, o, r, p50 / 1000, p99 / 1000,
                        (r != "NA" && r < 0.95 * o) ? "; the load was not carried: the latency is the queue'"'"'s" : "" }'
            done
        fi
        if [ "$scen" = ackdisk ]; then
            for b in $AVAILABLE; do
                has_store "$b" || continue
                on=$(awk -F'\t' -v b="$b" '$1=="ackdisk" && $2==b && $4!="NA" {print $4}' "$RESULTS" | median)
                off=$(awk -F'\t' -v b="$b" '$1=="ackmem" && $2==b && $4!="NA" {print $4}' "$RESULTS" | median)
                awk -v on="$on" -v off="$off" -v b="$b" 'BEGIN {
                    if (on == "NA" || off == "NA") print b ": PUBACK p99 persistence on minus off: n/a (run ackmem too)";
                    else printf "%s: PUBACK p99 persistence on minus off: %.2f ms\n", b, (on - off) / 1000 }'
            done
        fi
        if [[ " $AVAILABLE " == *" midge "* ]]; then
            mid=$(awk -F'\t' -v s="$scen" '$1==s && $2=="midge" && $4!="NA" {print $4}' "$RESULTS" | median)
            for b in $AVAILABLE; do
                [ "$b" = midge ] && continue
                peer=$(awk -F'\t' -v s="$scen" -v b="$b" '$1==s && $2==b && $4!="NA" {print $4}' "$RESULTS" | median)
                awk -v m="$mid" -v p="$peer" -v b="$b" 'BEGIN {
                    if (m == "NA" || p == "NA" || p == 0) print "ratio midge/" b ": n/a";
                    else printf "ratio midge/%s: %.2f\n", b, m / p }'
            done
        fi
        if [[ " $AVAILABLE " == *" midge-a "* && " $AVAILABLE " == *" midge-b "* ]]; then
            a=$(awk -F'\t' -v s="$scen" '$1==s && $2=="midge-a" && $4!="NA" {print $4}' "$RESULTS" | median)
            b=$(awk -F'\t' -v s="$scen" '$1==s && $2=="midge-b" && $4!="NA" {print $4}' "$RESULTS" | median)
            # The per-round spread of each binary, (max - min) / median, to judge the ratio by.
            spread() { awk -F'\t' -v s="$scen" -v b="$1" '$1==s && $2==b && $4!="NA" {print $4}' "$RESULTS" |
                sort -g | awk -v m="$2" '{v[NR]=$1} END {if (NR<2 || m=="NA" || m==0) print "n/a"; else printf "%.1f%%", (v[NR]-v[1])*100/m}'; }
            awk -v a="$a" -v b="$b" -v sa="$(spread midge-a "$a")" -v sb="$(spread midge-b "$b")" 'BEGIN {
                if (a == "NA" || b == "NA" || a == 0) print "ratio midge-b/midge-a: n/a";
                else printf "ratio midge-b/midge-a: %.3f (spread across rounds: a %s, b %s)\n", b / a, sa, sb }'
        fi
        echo
    done
    echo "elapsed: $(( $(date +%s) - START )) s; raw RESULT lines: $OUT/raw.txt; table: $RESULTS"
} | tee "$OUT/summary.md"
