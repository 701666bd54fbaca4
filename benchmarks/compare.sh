#!/usr/bin/env bash
# Portcullis against HAProxy and nginx on loopback, doing the same job: TLS 1.3 with the same
# ECDSA P-256 certificates, client certificate required, the same allowlist, the same upstream,
# two workers each. Loads are identical and interleaved over rounds; each scenario prints
#   SCENARIO portcullis=X haproxy=Y nginx=Z ratio_vs_best=R paired_ratio=P
# with medians, where R > 1 always means Portcullis did better than the best peer, and P is the
# median of the same ratio taken round by round (bench_stats.py says why both).
# See benchmarks/README.md. Everything it starts is stopped on exit.
#
# Environment (defaults in brackets):
#   ROUNDS [5]            rounds of the keep-alive, open-loop and handshake scenarios
#   RUN_SECONDS [5]       measured seconds per run (after 1 s of warm-up)
#   CONNS [32]            connections of the keep-alive and open-loop runs
#   HANDSHAKE_CONNS [16]  connections of the handshake run
#   OPEN_RATE [auto]      open-loop rate; auto = half the slowest keep-alive median, rounded
#   UPLOAD_BYTES [1e9]    UPLOAD_ROUNDS [5]
#   IDLE_CONNS [10000]    IDLE_ROUNDS [1]  IDLE_HOLD [4]
#   WORKERS [2]           worker threads/processes of every proxy
#   PROXIES ["portcullis haproxy nginx"]; add portcullis_copy for an A/A control: a second
#                         Portcullis, the same binary and config on its own ports, measured like
#                         the others but never a peer. Each line then also prints
#                         portcullis_copy=C copy_ratio=Q: Q is ratio_vs_best with the copy as the
#                         only peer, so how far from 1 it lands is this run's noise (README)
#   PORTCULLIS_BIN [build/portcullis]  the binary under test (scripts/build.sh builds it)
#   BUILD_PORTCULLIS=1    build it instead, as a Release build in BUILD_DIR
#   PORTCULLIS_IGNORE_SIGPIPE=1  start portcullis with SIGPIPE ignored (a workaround while a
#                         client that goes away mid-write can kill it; said in the output)
#   BUILD_DIR [build-bench]  BENCH_PORT_BASE [27400]  KEEP=1 keeps the run directory
#   LOADGEN [build it]    a portcullis-loadgen already built (nothing is built then)
#   PEERS_DIR [benchmarks/peers]  the config templates of the upstream and the three proxies
#   CROSSCHECK_REQUESTS [20000]  requests of each ab / loadgen cross-check run
#   CHECK_ONLY=1          start each proxy, run the allowlist check, and stop there: exit 0
#                         only if every proxy in PROXIES passed
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
ROUNDS=${ROUNDS:-5}
RUN_SECONDS=${RUN_SECONDS:-5}
CONNS=${CONNS:-32}
HANDSHAKE_CONNS=${HANDSHAKE_CONNS:-16}
OPEN_RATE=${OPEN_RATE:-auto}
UPLOAD_BYTES=${UPLOAD_BYTES:-1000000000}
UPLOAD_ROUNDS=${UPLOAD_ROUNDS:-5}
IDLE_CONNS=${IDLE_CONNS:-10000}
IDLE_ROUNDS=${IDLE_ROUNDS:-1}
IDLE_HOLD=${IDLE_HOLD:-4}
WORKERS=${WORKERS:-2}
PROXIES=${PROXIES:-"portcullis haproxy nginx"}
PEERS_DIR=${PEERS_DIR:-$here/peers}
CROSSCHECK_REQUESTS=${CROSSCHECK_REQUESTS:-20000}
BUILD_DIR=${BUILD_DIR:-$root/build-bench}
base=${BENCH_PORT_BASE:-27400}
upstream_port=$base
sink_port=$((base + 1))
admin_port=$((base + 2))
copy_admin_port=$((base + 3))
declare -A port=([portcullis]=$((base + 10)) [haproxy]=$((base + 11)) [nginx]=$((base + 12)))
if [[ " $PROXIES " == *" portcullis_copy "* ]]; then port[portcullis_copy]=$((base + 13)); fi

started=$(date +%s)
run=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
mkdir -p "$run/tmp"
results=$run/results.tsv
: > "$results"
declare -A pid=()   # service name -> PID of the process we started
declare -A upstream_of=()  # proxy -> the upstream port it was started with
declare -A deaths=()       # proxy -> how many times it died under load
available=()        # proxies that started and passed the allowlist check

log() { printf '# %s\n' "$*" >&2; }

stop() {  # stop NAME: TERM, then KILL after 5 s
  local name=$1 p=${pid[$1]:-}
  [ -n "$p" ] || return 0
  unset "pid[$name]"
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

cleanup() {
  local name
  for name in "${!pid[@]}"; do stop "$name"; done
  if [ "${KEEP:-0}" = 1 ]; then log "kept $run"; else rm -rf "$run"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

wait_listening() {  # wait_listening NAME PORT: up to 10 s, and the process must stay alive
  local name=$1 p=$2
  for _ in $(seq 100); do
    listening "$p" && return 0
    kill -0 "${pid[$name]}" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# The PIDs whose memory and CPU belong to a service: the process and its children (nginx workers).
service_pids() {
  local p=${pid[$1]}
  echo "$p" $(ps -o pid= --ppid "$p" 2>/dev/null)
}

sum_over_service() {  # sum_over_service NAME FILE AWK: AWK's output summed over /proc/PID/FILE
  local total=0 p v
  for p in $(service_pids "$1"); do
    v=$(awk "$3" "/proc/$p/$2" 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
rss_kib() { sum_over_service "$1" status '/^VmRSS:/ {print $2}'; }
cpu_ticks() { sum_over_service "$1" stat '{print $14 + $15}'; }  # utime + stime, threads included

render() {  # render TEMPLATE PORT UPSTREAM_PORT OUT [ADMIN_PORT]
  sed -e "s#@RUN@#$run#g" -e "s#@CERTS@#$run/certs#g" -e "s#@PORT@#$2#g" \
      -e "s#@UPSTREAM_PORT@#$3#g" -e "s#@WORKERS@#$WORKERS#g" -e "s#@ADMIN_PORT@#${5:-$admin_port}#g" \
      "$PEERS_DIR/$1" > "$4"
}

# ---- build ----

loadgen=${LOADGEN:-$BUILD_DIR/portcullis-loadgen}
portcullis_bin=${PORTCULLIS_BIN:-$root/build/portcullis}
configured=0
configure() {
  cmake -S "$root" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release > "$run/configure.log" 2>&1 && configured=1
}
if [ -n "${LOADGEN:-}" ]; then
  [ -x "$LOADGEN" ] || { echo "LOADGEN=$LOADGEN is not an executable" >&2; exit 2; }
elif configure && cmake --build "$BUILD_DIR" --target portcullis-loadgen -j2 > "$run/build-loadgen.log" 2>&1; then
  :
else
  # The tree may be mid-change elsewhere; the load generator needs nothing but its own files.
  log "cmake could not build portcullis-loadgen (see below); compiling it directly"
  tail -5 "$run/configure.log" "$run/build-loadgen.log" 2>/dev/null >&2 || true
  mkdir -p "$BUILD_DIR"
  newest_source=$(ls -t "$here"/loadgen.cpp "$here"/*.hpp | head -1)
  [ -x "$loadgen" ] && [ "$loadgen" -nt "$newest_source" ] ||
  g++ -std=c++20 -O2 -I"$root" -DBOOST_ASIO_NO_DEPRECATED -DBOOST_ASIO_DISABLE_BOOST_COROUTINE \
    "$here/loadgen.cpp" -o "$loadgen" -lboost_json -lssl -lcrypto -pthread
fi
if [ "${BUILD_PORTCULLIS:-0}" = 1 ] && [[ " $PROXIES " == *" portcullis"[\ _]* ]]; then
  if { [ $configured = 1 ] || configure; } && cmake --build "$BUILD_DIR" --target portcullis -j2 > "$run/build-portcullis.log" 2>&1; then
    portcullis_bin=$BUILD_DIR/portcullis
  else
    log "portcullis does not build yet: $(grep -m1 -E 'error|Error' "$run/build-portcullis.log" "$run/configure.log" 2>/dev/null | cut -c1-200)"
  fi
fi
[ -x "$portcullis_bin" ] || log "no portcullis binary at $portcullis_bin: portcullis=n/a"
log "portcullis: $portcullis_bin ($(stat -c %y "$portcullis_bin" 2>/dev/null | cut -d. -f1))"
# A private copy: others rebuild build/portcullis while this runs, and every restart must run the
# same binary.
if [ -x "$portcullis_bin" ]; then cp "$portcullis_bin" "$run/portcullis-under-test"; portcullis_bin=$run/portcullis-under-test; fi
log "built in $(( $(date +%s) - started ))s; $(haproxy -v | head -1 | cut -d' ' -f1-3), $(nginx -v 2>&1 | cut -d' ' -f3), $(openssl version | cut -d' ' -f1-2), portcullis at $(git -C "$root" rev-parse --short HEAD 2>/dev/null)"

# ---- certificates, configs, upstreams ----

"$here/make_certs.sh" "$run/certs"
certs=$run/certs
ulimit -n 20000 2>/dev/null || true

for p in $upstream_port $sink_port $admin_port $copy_admin_port "${port[@]}"; do
  if listening "$p"; then echo "port $p is in use; set BENCH_PORT_BASE" >&2; exit 2; fi
done

render upstream-nginx.conf 0 $upstream_port "$run/upstream-nginx.conf"
nginx -p "$run" -c "$run/upstream-nginx.conf" -e "$run/upstream-error.log" > "$run/upstream.out" 2>&1 &
pid[upstream]=$!
"$loadgen" --serve $sink_port -t 1 --sink-log "$run/sink.log" --serve-seconds 1800 > "$run/sink.out" 2>&1 &
pid[sink]=$!
wait_listening upstream $upstream_port || { cat "$run/upstream.out" >&2; exit 2; }
wait_listening sink $sink_port || { cat "$run/sink.out" >&2; exit 2; }

start_proxy() {  # start_proxy NAME UPSTREAM_PORT: returns 1 if it does not come up
  local name=$1 up=$2 conf
  upstream_of[$name]=$up
  echo "--- start $(date +%T) upstream $up" >> "$run/$name.out"
  case $name in
    portcullis|portcullis_copy)
      [ -n "$portcullis_bin" ] && [ -x "$portcullis_bin" ] || return 1
      conf=$run/$name.yaml
      render portcullis.yaml "${port[$name]}" "$up" "$conf" \
        "$([ "$name" = portcullis_copy ] && echo "$copy_admin_port" || echo "$admin_port")"
      if [ "${PORTCULLIS_IGNORE_SIGPIPE:-0}" = 1 ]; then
        (trap '' PIPE; exec "$portcullis_bin" run -c "$conf" --no-firewall >> "$run/$name.out" 2>&1) &
      else
        "$portcullis_bin" run -c "$conf" --no-firewall >> "$run/$name.out" 2>&1 &
      fi
      ;;
    haproxy)
      conf=$run/haproxy.cfg
      render haproxy.cfg "${port[$name]}" "$up" "$conf"
      haproxy -db -f "$conf" >> "$run/haproxy.out" 2>&1 &
      ;;
    nginx)
      conf=$run/nginx.conf
      render nginx.conf "${port[$name]}" "$up" "$conf"
      nginx -p "$run" -c "$conf" -e "$run/nginx-error.log" >> "$run/nginx.out" 2>&1 &
      ;;
    *)
      log "unknown proxy '$name' in PROXIES (portcullis, portcullis_copy, haproxy, nginx)"
      return 1
      ;;
  esac
  pid[$name]=$!
  if ! wait_listening "$name" "${port[$name]}"; then
    log "$name did not start: $(tail -3 "$run/$name.out" 2>/dev/null | tr '\n' ' ')"
    stop "$name"
    return 1
  fi
}

# After a load run: a proxy that died is reported (with its exit status or signal) and restarted,
# so one crash costs one run, not the rest of the comparison.
alive_or_restart() {  # alive_or_restart NAME
  local name=$1 p=${pid[$1]:-} status
  [ -n "$p" ] || return 0
  kill -0 "$p" 2>/dev/null && return 0
  status=0
  wait "$p" 2>/dev/null || status=$?
  unset "pid[$name]"
  deaths[$name]=$(( ${deaths[$name]:-0} + 1 ))
  if [ $status -gt 128 ]; then
    log "$name DIED under load: killed by SIG$(kill -l $((status - 128)))"
  else
    log "$name DIED under load: exit status $status"
  fi
  start_proxy "$name" "${upstream_of[$name]}" || log "$name does not restart"
}

lg() {  # lg OUT URL ARGS...: one load-generator run against a URL; JSON to OUT
  local out=$1 url=$2
  shift 2
  "$loadgen" "$url" "$@" > "$out" 2> "$out.err" || true
}

# Every run offers TLS 1.3 with AES-128-GCM only, so every proxy negotiates the same cipher (left
# to themselves Portcullis prefers AES-128-GCM and the peers AES-256-GCM).
tls_args=(--cert "$certs/bench-client.pem" --tls13 --ciphersuites TLS_AES_128_GCM_SHA256)

# ---- allowlist check: each proxy must do the same job before its numbers count ----

check_allowlist() {  # check_allowlist NAME
  local name=$1 url=https://127.0.0.1:${port[$1]} f=$run/check.json want got
  local -a cases=(
    "200|$url/api/check|--cert $certs/bench-client.pem"
    "403|$url/other|--cert $certs/bench-client.pem"
    "403|$url/api/check|--cert $certs/bench-client.pem -m POST"
    "403|$url/api/check|--cert $certs/other-client.pem"
  )
  local c
  for c in "${cases[@]}"; do
    IFS='|' read -r want target args <<< "$c"
    # shellcheck disable=SC2086  # args is a word list on purpose
    lg "$f" "$target" --ca "$certs/ca.crt" "${tls_args[@]:2}" -c 1 -t 1 -n 1 $args
    # status is {"CODE": COUNT} for the one request: its first three digits are the code.
    got=$(python3 "$here/bench_stats.py" get "$f" status | tr -dc '0-9')
    got=${got:0:3}
    if [ "$got" != "$want" ]; then
      log "$name fails the allowlist check: $target ($args) gave '${got:-error}', want $want"
      return 1
    fi
  done
  # Without a client certificate nothing may get through.
  lg "$f" "$url/api/check" --ca "$certs/ca.crt" "${tls_args[@]:2}" -c 1 -t 1 -n 1
  if [ "$(python3 "$here/bench_stats.py" get "$f" ok)" != 0 ]; then
    log "$name answered 2xx to a client without a certificate"
    return 1
  fi
  log "$name passes the allowlist check ($(python3 "$here/bench_stats.py" get "$run/check.json" tls_version)," \
    "$(python3 "$here/bench_stats.py" get "$run/check.json" cipher))"
}

for name in $PROXIES; do
  if start_proxy "$name" $upstream_port && check_allowlist "$name"; then
    available+=("$name")
  else
    stop "$name"
  fi
done
log "proxies under test: ${available[*]:-none} (${port[portcullis]} portcullis, ${port[haproxy]} haproxy, ${port[nginx]} nginx${port[portcullis_copy]:+, ${port[portcullis_copy]} portcullis_copy})"
[ ${#available[@]} -gt 0 ] || { echo "no proxy came up" >&2; exit 2; }
if [ "${CHECK_ONLY:-0}" = 1 ]; then
  for name in $PROXIES; do
    [[ " ${available[*]} " == *" $name "* ]] || { echo "check: $name does not do the bench job" >&2; exit 1; }
  done
  echo "check: ${available[*]} do the same job"
  exit 0
fi

rotated() {  # the available proxies, rotated by round so that no proxy always goes first
  local r=$1 n=${#available[@]} i
  for ((i = 0; i < n; i++)); do printf '%s ' "${available[$(((i + r) % n))]}"; done
}

record() {  # record SCENARIO PROXY ROUND FILE FIELD [SCALE]
  local value
  if problem=$(python3 "$here/bench_stats.py" clean "$4"); then
    value=$(python3 "$here/bench_stats.py" get "$4" "$5")
    [ -n "${6:-}" ] && value=$(python3 -c "print($value * $6)")
  else
    log "$2 $1 round $3: $problem"
    value=n/a
  fi
  echo "$1 $2 $3 $value" >> "$results"
}

record_cpu() {  # record_cpu SCENARIO PROXY ROUND TICKS FILE: proxy CPU microseconds per response
  local responses
  responses=$(python3 "$here/bench_stats.py" get "$5" responses)
  python3 -c "import os; r=$responses; print('$1 $2 $3', round($4 * 1e6 / os.sysconf('SC_CLK_TCK') / r, 1) if r else 'n/a')" >> "$results"
}

summary() { python3 "$here/bench_stats.py" line "$results" "$1" "$2"; }

# ---- reference limits ----

aes=$(openssl speed -mr -evp aes-128-gcm -seconds 1 -bytes 16384 2>/dev/null | awk -F: '/^\+F:/ {printf "%.0f", $4 / 1e6}')
lg "$run/tcp.json" http://127.0.0.1:1/ --loopback-tcp 2000000000
tcp=$(python3 "$here/bench_stats.py" get "$run/tcp.json" MBps | xargs printf '%.0f')
lg "$run/direct.json" "http://127.0.0.1:$upstream_port/api/bench" -c "$CONNS" -t 2 -d "$RUN_SECONDS" --warmup 1
direct=$(python3 "$here/bench_stats.py" get "$run/direct.json" ok_rps | xargs printf '%.0f')
direct_p99=$(python3 "$here/bench_stats.py" get "$run/direct.json" latency_us.p99 | xargs printf '%.0f')
lg "$run/direct-upload.json" "http://127.0.0.1:$sink_port/upload/bench" -c 1 -t 1 -n 1 --body-bytes "$UPLOAD_BYTES"
direct_upload=$(python3 "$here/bench_stats.py" get "$run/direct-upload.json" upload_MBps | xargs printf '%.0f')
echo "reference aes128gcm_1core_MBps=$aes loopback_tcp_MBps=$tcp direct_upstream_rps=$direct direct_upstream_p99_us=$direct_p99 direct_upload_MBps=$direct_upload (plaintext, no proxy)"

# ---- cross-check of the load generator against ApacheBench (ab -k: HTTP/1.0 keep-alive) ----
# Same proxy, same 8 connections, one thread each, interleaved three times.

if command -v ab > /dev/null; then
  target=${available[-1]}
  for r in 0 1 2; do
    ab -k -c 8 -n "$CROSSCHECK_REQUESTS" -E "$certs/bench-client.pem" "https://127.0.0.1:${port[$target]}/api/bench" 2>&1 |
      awk -v r=$r '/^Requests per second/ {print "crosscheck_ab_rps", "ab", r, $4} /^(Failed|Non-2xx)/ && $NF != 0 {print "ab:", $0 > "/dev/stderr"}' >> "$results"
    # No cipher restriction here: the same cipher ab negotiates (the server's choice).
    lg "$run/cross-$r.json" "https://127.0.0.1:${port[$target]}/api/bench" --cert "$certs/bench-client.pem" -c 8 -t 1 -n "$CROSSCHECK_REQUESTS"
    echo "crosscheck_ab_rps loadgen $r $(python3 "$here/bench_stats.py" get "$run/cross-$r.json" ok_rps)" >> "$results"
  done
  python3 - "$results" "$target" <<'EOF'
import statistics, sys
v = {}
for row in open(sys.argv[1]):
    s, who, _, x = row.split()
    if s == "crosscheck_ab_rps":
        v.setdefault(who, []).append(float(x))
print("crosscheck against %s, 8 connections, 1 thread: ab_k_rps=%.0f loadgen_rps=%.0f (medians of 3; ab speaks HTTP/1.0)"
      % (sys.argv[2], statistics.median(v.get("ab", [0])), statistics.median(v.get("loadgen", [0]))))
EOF
fi

# ---- scenario 1: keep-alive small requests, closed loop ----

for ((r = 0; r < ROUNDS; r++)); do
  for name in $(rotated $r); do
    f=$run/ka-$name-$r.json
    before=$(cpu_ticks "$name")
    lg "$f" "https://127.0.0.1:${port[$name]}/api/bench" "${tls_args[@]}" -c "$CONNS" -t 2 -d "$RUN_SECONDS" --warmup 1
    alive_or_restart "$name"
    record keepalive_rps "$name" $r "$f" ok_rps
    record_cpu keepalive_cpu_us_per_req "$name" $r $(( $(cpu_ticks "$name") - before )) "$f"
    record keepalive_closed_p99_ms "$name" $r "$f" latency_us.p99 0.001
  done
done
summary keepalive_rps high
summary keepalive_cpu_us_per_req low
summary keepalive_closed_p99_ms low

# ---- scenario 2: p99 at a fixed open-loop rate all of them sustain ----

if [ "$OPEN_RATE" = auto ]; then
  OPEN_RATE=$(python3 - "$results" <<'EOF'
import statistics, sys
by = {}
for row in open(sys.argv[1]):
    s, p, _, v = row.split()
    if s == "keepalive_rps" and v != "n/a":
        by.setdefault(p, []).append(float(v))
slowest = min(statistics.median(v) for v in by.values()) if by else 2000
print(max(100, int(slowest / 2 / 100) * 100))
EOF
)
fi
for ((r = 0; r < ROUNDS; r++)); do
  for name in $(rotated $r); do
    f=$run/open-$name-$r.json
    lg "$f" "https://127.0.0.1:${port[$name]}/api/bench" "${tls_args[@]}" -c "$CONNS" -t 2 -d "$RUN_SECONDS" --warmup 1 -R "$OPEN_RATE"
    alive_or_restart "$name"
    record "open_loop_p99_ms@${OPEN_RATE}rps" "$name" $r "$f" latency_us.p99 0.001
    record "open_loop_p50_ms@${OPEN_RATE}rps" "$name" $r "$f" latency_us.p50 0.001
  done
done
summary "open_loop_p99_ms@${OPEN_RATE}rps" low
summary "open_loop_p50_ms@${OPEN_RATE}rps" low

# ---- scenario 3: a new connection (full TLS 1.3 handshake, client certificate) per request ----

for ((r = 0; r < ROUNDS; r++)); do
  for name in $(rotated $r); do
    f=$run/hs-$name-$r.json
    before=$(cpu_ticks "$name")
    lg "$f" "https://127.0.0.1:${port[$name]}/api/bench" "${tls_args[@]}" -c "$HANDSHAKE_CONNS" -t 2 -d "$RUN_SECONDS" --warmup 1 --new-connection
    alive_or_restart "$name"
    record handshakes_per_s "$name" $r "$f" ok_rps
    record_cpu handshake_cpu_us_per_conn "$name" $r $(( $(cpu_ticks "$name") - before )) "$f"
  done
done
summary handshakes_per_s high
summary handshake_cpu_us_per_conn low

# ---- scenario 4: a streamed upload, upstream = the sink that reads every byte ----
# nginx's `return 200` answers before reading the body; the sink answers after the last byte,
# so a proxy cannot stop relaying early. Each proxy is restarted pointing at the sink.

upload_ready=()
for name in "${available[@]}"; do
  stop "$name"
  if start_proxy "$name" $sink_port; then upload_ready+=("$name"); fi
done
for ((r = 0; r < UPLOAD_ROUNDS; r++)); do
  for name in $(rotated $r); do
    [[ " ${upload_ready[*]} " == *" $name "* ]] || continue
    f=$run/up-$name-$r.json
    lg "$f" "https://127.0.0.1:${port[$name]}/upload/bench" "${tls_args[@]}" -c 1 -t 1 -n 1 --body-bytes "$UPLOAD_BYTES" --timeout-ms 30000
    alive_or_restart "$name"
    record upload_MBps "$name" $r "$f" upload_MBps
    relayed=$(tail -1 "$run/sink.log" 2>/dev/null || echo 0)
    if [ "$relayed" != "$UPLOAD_BYTES" ]; then
      log "$name upload round $r: the sink saw $relayed of $UPLOAD_BYTES bytes"
      echo "upload_MBps $name $r n/a" >> "$results"
    fi
    echo 0 >> "$run/sink.log"
  done
done
summary upload_MBps high
for name in "${available[@]}"; do stop "$name"; done

# ---- scenario 5: idle TLS connections, memory per connection ----
# A fresh proxy per round: a few requests, then the baseline RSS, then IDLE_CONNS handshakes
# held open; RSS is read once all are open (summed over the proxy's processes).

for ((r = 0; r < IDLE_ROUNDS; r++)); do
  for name in $(rotated $r); do
    start_proxy "$name" $upstream_port || continue
    lg "$run/idle-warm.json" "https://127.0.0.1:${port[$name]}/api/bench" "${tls_args[@]}" -c 4 -t 1 -n 200
    sleep 0.5
    baseline=$(rss_kib "$name")
    ready=$run/idle-ready-$name-$r
    f=$run/idle-$name-$r.json
    "$loadgen" "https://127.0.0.1:${port[$name]}/api/bench" "${tls_args[@]}" --idle "$IDLE_CONNS" \
      --hold "$IDLE_HOLD" --ready-file "$ready" --timeout-ms 20000 > "$f" 2> "$f.err" &
    lgpid=$!
    for _ in $(seq 1200); do [ -f "$ready" ] || ! kill -0 $lgpid 2>/dev/null && break; sleep 0.1; done
    sleep 1
    held=$(rss_kib "$name")
    wait $lgpid || true
    alive_or_restart "$name"
    established=$(python3 "$here/bench_stats.py" get "$f" held)
    if [ "$established" = "$IDLE_CONNS" ]; then
      python3 -c "print('idle_rss_KiB_per_conn $name $r', round(($held - $baseline) / $established, 2))" >> "$results"
    else
      log "$name idle round $r: $established of $IDLE_CONNS connections held ($(tail -1 "$f.err"))"
      echo "idle_rss_KiB_per_conn $name $r n/a" >> "$results"
    fi
    echo "idle_rss_baseline_MiB $name $r $((baseline / 1024))" >> "$results"
    # The whole process with every connection held: what a host must provision. nginx, for one,
    # allocates its connection array for worker_connections at start, so part of its cost per
    # connection is in the baseline, not in the line above.
    echo "idle_rss_total_MiB $name $r $((held / 1024))" >> "$results"
    stop "$name"
  done
done
summary idle_rss_KiB_per_conn low
summary idle_rss_baseline_MiB low
summary idle_rss_total_MiB low

for name in "${!deaths[@]}"; do log "$name died ${deaths[$name]} time(s) under load (see above)"; done
[ "${PORTCULLIS_IGNORE_SIGPIPE:-0}" = 1 ] && log "portcullis ran with SIGPIPE ignored (PORTCULLIS_IGNORE_SIGPIPE=1)"
log "done in $(( $(date +%s) - started ))s; $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg)"
