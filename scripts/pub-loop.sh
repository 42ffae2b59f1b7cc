#!/usr/bin/env bash
# The way home users load-test a broker: N parallel shell loops of `mosquitto_pub -q 1`, one
# `mosquitto_sub` counting. Reports messages per second (process start-up included, as a user
# sees it) and loss/duplicates, for any broker on HOST:PORT.
#
# Usage: scripts/pub-loop.sh [-h HOST] [-p PORT] [-n LOOPS] [-m MESSAGES_PER_LOOP] [-q QOS]
#   defaults: -h 127.0.0.1 -p 1883 -n 8 -m 200 -q 1
# Needs mosquitto_pub and mosquitto_sub (Debian: mosquitto-clients). Bounded: LOOPS x MESSAGES
# publishes, then at most 10 s waiting for stragglers.
set -euo pipefail

HOST=127.0.0.1
PORT=1883
LOOPS=8
COUNT=200
QOS=1
while getopts "h:p:n:m:q:" opt; do
    case "$opt" in
        h) HOST=$OPTARG ;;
        p) PORT=$OPTARG ;;
        n) LOOPS=$OPTARG ;;
        m) COUNT=$OPTARG ;;
        q) QOS=$OPTARG ;;
        *) sed -n '2,9p' "$0"; exit 2 ;;
    esac
done
for tool in mosquitto_pub mosquitto_sub; do
    command -v "$tool" >/dev/null || { echo "pub-loop.sh: $tool not found (apt-get install mosquitto-clients)" >&2; exit 1; }
done

TOPIC="pub-loop/$$"
WORK=$(mktemp -d)
SUB_PID=""
cleanup() {
    [ -n "$SUB_PID" ] && kill "$SUB_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

EXPECTED=$((LOOPS * COUNT))
# Each payload is "LOOP SEQ", unique per message; mosquitto_sub prints one per line.
mosquitto_sub -h "$HOST" -p "$PORT" -q "$QOS" -t "$TOPIC/#" -i "pub-loop-sub-$$" >"$WORK/received" 2>"$WORK/sub.err" &
SUB_PID=$!
sleep 1 # let the subscription land before the first publish
kill -0 "$SUB_PID" 2>/dev/null || { echo "pub-loop.sh: mosquitto_sub failed: $(cat "$WORK/sub.err")" >&2; exit 1; }

publish_loop() { # loop index
    local i fails=0
    for i in $(seq 1 "$COUNT"); do
        mosquitto_pub -h "$HOST" -p "$PORT" -q "$QOS" -t "$TOPIC/$1" -m "$1 $i" -i "pub-loop-$$-$1" 2>/dev/null \
            || fails=$((fails + 1))
    done
    echo "$fails" >"$WORK/fails.$1"
}

START=$(date +%s.%N)
PIDS=()
for n in $(seq 1 "$LOOPS"); do
    publish_loop "$n" &
    PIDS+=($!)
done
wait "${PIDS[@]}"
END=$(date +%s.%N)

# Give the subscriber up to 10 s to catch up.
for _ in $(seq 1 100); do
    [ "$(wc -l <"$WORK/received")" -ge "$EXPECTED" ] && break
    sleep 0.1
done
kill "$SUB_PID" 2>/dev/null || true
wait "$SUB_PID" 2>/dev/null || true
SUB_PID=""

FAILS=$(cat "$WORK"/fails.* | awk '{s += $1} END {print s + 0}')
RECEIVED=$(wc -l <"$WORK/received")
UNIQUE=$(sort -u "$WORK/received" | wc -l)
LOST=$((EXPECTED - FAILS - UNIQUE))
DUP=$((RECEIVED - UNIQUE))
awk -v e="$EXPECTED" -v f="$FAILS" -v s="$START" -v t="$END" -v r="$UNIQUE" -v l="$LOST" -v d="$DUP" \
    -v n="$LOOPS" -v h="$HOST" -v p="$PORT" -v q="$QOS" 'BEGIN {
    secs = t - s; rate = (e - f) / secs
    printf "RESULT scenario=pub-loop loops=%d qos=%d published=%d failed=%d received=%d lost=%d dup=%d secs=%.2f rate=%.0f\n", n, q, e - f, f, r, l, d, secs, rate
    printf "pub-loop: %d shell loops of mosquitto_pub -q %d against %s:%s: %.0f msg/s, %d lost, %d duplicates, %d publishes failed\n", n, q, h, p, rate, l, d, f
}'
