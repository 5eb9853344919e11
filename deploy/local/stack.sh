#!/usr/bin/env bash
# streamscore no-Docker local stack: Apache Kafka (KRaft), Apicurio Registry,
# FerretDB (MongoDB wire protocol, SQLite backend). Everything binds to 127.0.0.1.
#
#   deploy/local/stack.sh fetch   [component...]   download/build into the cache (idempotent)
#   deploy/local/stack.sh up      [service...]     fetch if needed, start what is not answering, wait
#   deploy/local/stack.sh down    [service...]     stop what this script started (pid files)
#   deploy/local/stack.sh restart [service...]     down + up
#   deploy/local/stack.sh status  [service...]     exit 1 if any listed service is not answering
#   deploy/local/stack.sh env                      print shell exports for the service addresses
#   deploy/local/stack.sh logs    <service>        tail -f a service's log
#
# services:   kafka  registry (aliases: apicurio, schema-registry)  mongo (alias: ferretdb)
# components: kafka registry ferretdb mongosh apt   (apt = prometheus, promtool, kcat)
#
# Downloads are cached in ${STREAMSCORE_CACHE:-$HOME/.cache/streamscore};
# state (data, logs, pid files) lives in <repo>/.stack (git-ignored).
# Environment knobs: STREAMSCORE_CACHE, STREAMSCORE_STACK_DIR, STACK_TIMEOUT (seconds per
# service, default 180), KAFKA_HEAP_OPTS (default "-Xms256m -Xmx1g"), REGISTRY_HEAP_OPTS
# (default "-Xms128m -Xmx768m"), REGISTRY_JVM_OPTS (default: C1 only + serial GC, which halves
# Quarkus start time on 2 cores), REGISTRY_JAVA_HOME (a Java 21+ for Apicurio Registry 3.3).
# Ports (a second stack beside the first, e.g. for fault tests): STACK_KAFKA_PORT (9092),
# STACK_KAFKA_CONTROLLER_PORT (9093), STACK_REGISTRY_PORT (8081), STACK_REGISTRY_MANAGEMENT_PORT
# (8091), STACK_MONGO_PORT (27017), STACK_MONGO_DEBUG_PORT (8088); use another STREAMSCORE_STACK_DIR.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${STREAMSCORE_CACHE:-${HOME:-/root}/.cache/streamscore}"
STACK="${STREAMSCORE_STACK_DIR:-$REPO/.stack}"
export DEBIAN_FRONTEND=noninteractive

KAFKA_VERSION=4.4.0
APICURIO_VERSION=3.3.3
FERRETDB_VERSION=v1.24.2
MONGOSH_VERSION=2.12.0

KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
APICURIO_HOME="$CACHE/apicurio-registry-$APICURIO_VERSION"
FERRETDB_BIN="$CACHE/bin/ferretdb"
MONGOSH="$CACHE/npm/node_modules/.bin/mongosh"

KAFKA_PORT="${STACK_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${STACK_KAFKA_CONTROLLER_PORT:-9093}"
REGISTRY_PORT="${STACK_REGISTRY_PORT:-8081}"
REGISTRY_MANAGEMENT_PORT="${STACK_REGISTRY_MANAGEMENT_PORT:-8091}"
MONGO_PORT="${STACK_MONGO_PORT:-27017}"
MONGO_DEBUG_PORT="${STACK_MONGO_DEBUG_PORT:-8088}"

KAFKA_ADDR=127.0.0.1:$KAFKA_PORT
KAFKA_CONTROLLER_ADDR=127.0.0.1:$KAFKA_CONTROLLER_PORT
REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT
CCOMPAT_URL=$REGISTRY_URL/apis/ccompat/v7
MONGO_ADDR=127.0.0.1:$MONGO_PORT
MONGO_URL=mongodb://$MONGO_ADDR/

ALL_SERVICES=(kafka registry mongo)
ALL_COMPONENTS=(apt kafka registry ferretdb mongosh)
TIMEOUT="${STACK_TIMEOUT:-180}"

PIDS="$STACK/pids"
LOGS="$STACK/logs"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo -n "$@"
  else return 1
  fi
}

need_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is required ($2) but not on PATH"
}

java_spec() {  # java_spec /path/to/java -> major version (17, 21, 25, ...)
  "$1" -XshowSettings:properties -version 2>&1 |
    awk -F'= ' '/java.specification.version/ { split($2, v, "."); print (v[1] == 1 ? v[2] : v[1]) }'
}

# find_java MIN: path of a java binary of at least version MIN. Kafka 4.x needs 17;
# Apicurio Registry 3.3 is compiled for 21 (UnsupportedClassVersionError on 17), so it
# gets the first of $REGISTRY_JAVA_HOME, $JAVA_HOME, `java` on PATH, /usr/lib/jvm/* that fits.
find_java() {
  local min="$1" pref="${2:-}" cand v
  for cand in ${pref:+"$pref/bin/java"} ${JAVA_HOME:+"$JAVA_HOME/bin/java"} \
              "$(command -v java 2>/dev/null || true)" /usr/lib/jvm/*/bin/java; do
    [ -n "$cand" ] && [ -x "$cand" ] || continue
    v="$(java_spec "$cand")"
    if [ -n "$v" ] && [ "$v" -ge "$min" ] 2>/dev/null; then
      echo "$cand"
      return 0
    fi
  done
  return 1
}

need_java() {  # need_java MIN [PREFERRED_JAVA_HOME] -> sets JAVA
  JAVA="$(find_java "$1" "${2:-}")" ||
    die "Java $1+ is required (set JAVA_HOME or REGISTRY_JAVA_HOME; looked at PATH and /usr/lib/jvm/*)"
}

# ---------------------------------------------------------------- fetch

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || { log "apt-get not available; install $* by hand"; return 1; }
  if [ "$APT_UPDATED" = 0 ]; then
    as_root apt-get -o DPkg::Lock::Timeout=300 update -qq || { log "apt-get update failed (need root or passwordless sudo)"; return 1; }
    APT_UPDATED=1
  fi
  as_root apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >/dev/null
}

fetch_apt() {
  local missing=()
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v kcat >/dev/null 2>&1 || missing+=(kcat)
  [ "${#missing[@]}" = 0 ] && return 0
  if [ "$(id -u)" != 0 ] && ! { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
    # kcat only speeds up Kafka's readiness check (there is a fallback); prometheus is optional
    log "warning: ${missing[*]} missing and not root: apt-get install -y ${missing[*]}"
    return 0
  fi
  log "apt-get install ${missing[*]}"
  apt_install "${missing[@]}" || die "could not install ${missing[*]} with apt-get"
}

fetch_kafka() {
  local want have
  want="$(sha256sum "$HERE/kafka/pom.xml" | cut -d' ' -f1)"
  have="$(cat "$KAFKA_HOME/.complete" 2>/dev/null || true)"
  [ "$want" = "$have" ] && return 0
  need_cmd mvn "Maven resolves the Kafka jars from Maven Central"
  local tmp="$KAFKA_HOME.tmp.$$"
  rm -rf "$tmp"
  log "resolving Kafka $KAFKA_VERSION jars with Maven"
  mvn -B -q -Dstyle.color=never -f "$HERE/kafka/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$tmp/libs" -DincludeScope=runtime >&2
  ls "$tmp/libs/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null
  rm -rf "$KAFKA_HOME"
  mv "$tmp" "$KAFKA_HOME"
  echo "$want" >"$KAFKA_HOME/.complete"
}

fetch_registry() {
  [ -f "$APICURIO_HOME/quarkus-run.jar" ] && [ -f "$APICURIO_HOME/.complete" ] && return 0
  need_cmd mvn "Maven downloads the Apicurio Registry distribution from Maven Central"
  local tgz="$CACHE/dl/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz"
  if [ ! -s "$tgz" ]; then
    log "downloading io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all"
    mkdir -p "$CACHE/dl"
    (cd "$CACHE/dl" && mvn -B -q -Dstyle.color=never dependency:copy \
        -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
        -DoutputDirectory="$CACHE/dl" >&2)
  fi
  local tmp="$APICURIO_HOME.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  tar -xzf "$tgz" -C "$tmp"
  [ -f "$tmp/quarkus-run.jar" ] || die "unexpected layout in $tgz (no quarkus-run.jar)"
  rm -rf "$APICURIO_HOME"
  mv "$tmp" "$APICURIO_HOME"
  touch "$APICURIO_HOME/.complete"
}

fetch_ferretdb() {
  # (no `cmd | grep -q` anywhere: with pipefail, grep exiting early SIGPIPEs cmd -> false negative)
  local out
  if [ -x "$FERRETDB_BIN" ] && out="$("$FERRETDB_BIN" --version 2>/dev/null)" &&
     grep -qx "version: $FERRETDB_VERSION" <<<"$out"; then
    return 0
  fi
  need_cmd go "Go builds FerretDB from the Go module proxy"
  # `go install github.com/FerretDB/FerretDB/cmd/ferretdb@VERSION` builds a binary that panics
  # at start ("Invalid build/version/version.txt file content"): the module zip lacks the
  # generated build/version/version.txt. So: download the module, copy it, write the file, build.
  log "building FerretDB $FERRETDB_VERSION from the Go module proxy"
  local dir src
  dir="$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" |
         sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  [ -d "$dir" ] || die "go mod download github.com/FerretDB/FerretDB@$FERRETDB_VERSION failed"
  src="$CACHE/build/ferretdb-$FERRETDB_VERSION"
  rm -rf "$src" && mkdir -p "$CACHE/build" "$CACHE/bin"
  cp -R "$dir" "$src"
  chmod -R u+w "$src"
  echo "$FERRETDB_VERSION" >"$src/build/version/version.txt"
  echo "local" >"$src/build/version/package.txt"
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -o "$FERRETDB_BIN.tmp" ./cmd/ferretdb)
  mv "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
  rm -rf "$src"
  out="$("$FERRETDB_BIN" --version)"
  grep -qx "version: $FERRETDB_VERSION" <<<"$out" || die "built FerretDB does not report $FERRETDB_VERSION"
}

fetch_mongosh() {
  local pkg="$CACHE/npm/node_modules/mongosh/package.json"
  if [ -x "$MONGOSH" ] && [ -f "$pkg" ] && grep -q "\"version\": *\"$MONGOSH_VERSION\"" "$pkg"; then
    return 0
  fi
  need_cmd npm "npm installs mongosh"
  log "npm install mongosh@$MONGOSH_VERSION"
  mkdir -p "$CACHE/npm"
  npm install --prefix "$CACHE/npm" --no-audit --no-fund --loglevel=error \
      "mongosh@$MONGOSH_VERSION" >&2
  [ -x "$MONGOSH" ] || die "mongosh was not installed at $MONGOSH"
}

component_of() {
  case "$1" in
    kafka) echo kafka ;;
    registry|apicurio|schema-registry) echo registry ;;
    ferretdb|mongo|mongodb) echo ferretdb ;;
    mongosh) echo mongosh ;;
    apt|prometheus|kcat) echo apt ;;
    *) die "unknown component '$1' (known: ${ALL_COMPONENTS[*]})" ;;
  esac
}

# run_fetch_chain NAME COMPONENT...: fetch components one after the other, timing each.
run_fetch_chain() {
  local c t
  shift
  for c in "$@"; do
    t="$(now)"
    "fetch_$c"
    log "fetch $c: ok ($(elapsed "$t")s)"
  done
}

cmd_fetch() {
  local comps=() c want=() mvn_chain=() others=()
  [ "$#" = 0 ] && set -- "${ALL_COMPONENTS[@]}"
  for c in "$@"; do want+=("$(component_of "$c")"); done
  mkdir -p "$CACHE/logs"
  # apt first (a system-wide lock), then the rest in parallel: the Maven downloads in one
  # chain (a Maven local repository is not safe for concurrent writers), Go and npm beside it.
  for c in apt kafka registry ferretdb mongosh; do
    [[ " ${want[*]} " == *" $c "* ]] || continue
    case "$c" in
      apt) run_fetch_chain - apt ;;
      kafka|registry) mvn_chain+=("$c") ;;
      *) others+=("$c") ;;
    esac
  done
  local jobs=() names=() rc=0 i lf
  if [ "${#mvn_chain[@]}" -gt 0 ]; then names+=("${mvn_chain[*]}"); fi
  for c in "${others[@]}"; do names+=("$c"); done
  if [ "${#names[@]}" -le 1 ]; then
    # one chain: run in the foreground, output as it comes
    [ "${#names[@]}" = 1 ] && run_fetch_chain - ${names[0]}
    return 0
  fi
  for i in "${!names[@]}"; do
    lf="$CACHE/logs/fetch-${names[$i]// /-}.log"
    # shellcheck disable=SC2086
    (run_fetch_chain - ${names[$i]}) >"$lf" 2>&1 9>&- &
    jobs+=("$!")
  done
  for i in "${!names[@]}"; do
    lf="$CACHE/logs/fetch-${names[$i]// /-}.log"
    if wait "${jobs[$i]}"; then
      grep -h '^\[stack\]' "$lf" >&2 || true
    else
      rc=1
      printf '[stack] ERROR: fetch %s failed; last lines of %s:\n' "${names[$i]}" "$lf" >&2
      tail -n 40 "$lf" | sed 's/^/    /' >&2
    fi
  done
  [ "$rc" = 0 ] || die "fetch failed"
}

# ---------------------------------------------------------------- services

service_of() {
  case "$1" in
    kafka) echo kafka ;;
    registry|apicurio|schema-registry) echo registry ;;
    mongo|mongodb|ferretdb) echo mongo ;;
    *) die "unknown service '$1' (known: ${ALL_SERVICES[*]})" ;;
  esac
}

components_for() {
  case "$1" in
    kafka) echo "apt kafka" ;;   # kcat is used for the readiness check
    registry) echo "registry" ;;
    mongo) echo "ferretdb mongosh" ;;
  esac
}

service_addr() {
  case "$1" in
    kafka) echo "$KAFKA_ADDR (controller $KAFKA_CONTROLLER_ADDR)" ;;
    registry) echo "$CCOMPAT_URL" ;;
    mongo) echo "$MONGO_URL" ;;
  esac
}

service_port() {
  case "$1" in kafka) echo "$KAFKA_PORT" ;; registry) echo "$REGISTRY_PORT" ;; mongo) echo "$MONGO_PORT" ;; esac
}

pidfile() { echo "$PIDS/$1.pid"; }
logfile() { echo "$LOGS/$1.log"; }

# pid of a process this script started for service $1, if it is still alive
# (the command line must mention our state dir, to survive pid reuse).
our_pid() {
  local f pid cmdline
  f="$(pidfile "$1")"
  [ -f "$f" ] || return 1
  pid="$(cat "$f" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$cmdline" == *"$STACK"* ]] || return 1
  echo "$pid"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Minimal MongoDB wire-protocol ping (OP_MSG {ping: 1}) with the Python standard library.
mongo_ping() {
  python3 - "$MONGO_ADDR" <<'PY' 2>/dev/null
import socket, struct, sys
host, port = sys.argv[1].rsplit(":", 1)
def cstr(s): return s.encode() + b"\x00"
body = b"\x10" + cstr("ping") + struct.pack("<i", 1) + b"\x02" + cstr("$db") + struct.pack("<i", 6) + cstr("admin")
doc = struct.pack("<i", len(body) + 5) + body + b"\x00"
payload = struct.pack("<I", 0) + b"\x00" + doc
msg = struct.pack("<iiii", 16 + len(payload), 1, 0, 2013) + payload
with socket.create_connection((host, int(port)), timeout=3) as s:
    s.settimeout(3)
    s.sendall(msg)
    hdr = b""
    while len(hdr) < 16:
        chunk = s.recv(16 - len(hdr))
        if not chunk: sys.exit(1)
        hdr += chunk
    n = struct.unpack("<i", hdr[:4])[0] - 16
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk: sys.exit(1)
        data += chunk
ok = b"\x01ok\x00" + struct.pack("<d", 1.0)
sys.exit(0 if ok in data else 1)
PY
}

kafka_ready() {
  if command -v kcat >/dev/null 2>&1; then
    local md
    md="$(kcat -b "$KAFKA_ADDR" -L -m 3 2>/dev/null)" || return 1
    [[ "$md" == *"broker 1 at $KAFKA_ADDR"* ]]
  else
    port_open "$KAFKA_PORT" && grep -q 'Kafka Server started' "$(logfile kafka)" 2>/dev/null
  fi
}

registry_ready() {
  curl -fsS -o /dev/null --max-time 3 "$CCOMPAT_URL/subjects" 2>/dev/null
}

answering() {
  case "$1" in
    kafka) kafka_ready ;;
    registry) registry_ready ;;
    mongo) mongo_ping ;;
  esac
}

rotate_log() {
  local f
  f="$(logfile "$1")"
  if [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt $((50 * 1024 * 1024)) ]; then
    mv -f "$f" "$f.1"
  fi
  printf '\n===== %s: starting %s (stack.sh) =====\n' "$(date -Is)" "$1" >>"$f"
}

# launch NAME CWD CMD... : start detached in its own session, record its pid.
launch() {
  local name="$1" cwd="$2"; shift 2
  local pf lf
  pf="$(pidfile "$name")"; lf="$(logfile "$name")"
  rm -f "$pf"
  rotate_log "$name"
  (cd "$cwd" && exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pf" "$@" >>"$lf" 2>&1 </dev/null 9>&-) &
  local i
  for i in $(seq 1 50); do [ -s "$pf" ] && break; sleep 0.1; done
  [ -s "$pf" ] || die "$name did not start (no pid file); see $lf"
}

render_kafka_config() {
  mkdir -p "$STACK/kafka/data"
  sed -e "s#@KAFKA_DATA_DIR@#$STACK/kafka/data#g" \
      -e "s#127\.0\.0\.1:9092#$KAFKA_ADDR#g" -e "s#127\.0\.0\.1:9093#$KAFKA_CONTROLLER_ADDR#g" \
      "$HERE/kafka/server.properties" >"$STACK/kafka/server.properties"
}

kafka_java() {
  need_java 17
  "$JAVA" -Xms64m -Xmx256m -Dlog4j2.configurationFile="$HERE/kafka/tools-log4j2.yaml" \
       -cp "$KAFKA_HOME/libs/*" "$@"
}

format_kafka() {
  render_kafka_config
  [ -f "$STACK/kafka/data/meta.properties" ] && return 0
  local id_file="$STACK/kafka/cluster.id"
  if [ ! -s "$id_file" ]; then
    kafka_java kafka.tools.StorageTool random-uuid >"$id_file.tmp"
    mv "$id_file.tmp" "$id_file"
  fi
  log "formatting KRaft storage (cluster id $(cat "$id_file"))"
  kafka_java kafka.tools.StorageTool format --standalone -t "$(cat "$id_file")" \
      -c "$STACK/kafka/server.properties" >>"$(logfile kafka)" 2>&1 ||
    { tail -n 20 "$(logfile kafka)" >&2; die "kafka storage format failed"; }
}

start_kafka() {
  need_java 17
  format_kafka
  # shellcheck disable=SC2086
  launch kafka "$STACK/kafka" "$JAVA" ${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g} \
    -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$HERE/kafka/log4j2.yaml" -Dkafka.logs.dir="$LOGS" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$STACK/kafka/server.properties"
}

start_registry() {
  need_java 21 "${REGISTRY_JAVA_HOME:-}"
  mkdir -p "$STACK/registry/h2" "$STACK/registry/tmp"
  # shellcheck disable=SC2086
  STREAMSCORE_STACK_DIR="$STACK" STACK_REGISTRY_PORT="$REGISTRY_PORT" \
  STACK_REGISTRY_MANAGEMENT_PORT="$REGISTRY_MANAGEMENT_PORT" launch registry "$STACK/registry" "$JAVA" ${REGISTRY_HEAP_OPTS:--Xms128m -Xmx768m} \
    ${REGISTRY_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1} -Djava.awt.headless=true -Djava.io.tmpdir="$STACK/registry/tmp" \
    -Dquarkus.config.locations="$HERE/registry/application.properties" \
    -Dstreamscore.stack="$STACK" \
    -jar "$APICURIO_HOME/quarkus-run.jar"
}

start_mongo() {
  mkdir -p "$STACK/ferretdb/data" "$STACK/ferretdb/state"
  launch mongo "$STACK/ferretdb" "$FERRETDB_BIN" \
    --handler=sqlite --sqlite-url="file:$STACK/ferretdb/data/" \
    --listen-addr="$MONGO_ADDR" --debug-addr="127.0.0.1:$MONGO_DEBUG_PORT" \
    --state-dir="$STACK/ferretdb/state" --telemetry=disable --log-level=info
}

# Confluent Schema Registry's default global compatibility is BACKWARD; the config key
# apicurio.rules.global.compatibility sets it, this makes sure (older data, other configs).
registry_post_start() {
  local cur
  cur="$(curl -fsS --max-time 5 "$CCOMPAT_URL/config" 2>/dev/null || true)"
  case "$cur" in
    *'"BACKWARD"'*) ;;
    *) curl -fsS --max-time 5 -X PUT -H 'Content-Type: application/vnd.schemaregistry.v1+json' \
         --data '{"compatibility":"BACKWARD"}' "$CCOMPAT_URL/config" >/dev/null ||
         log "warning: could not set the registry's global compatibility to BACKWARD" ;;
  esac
}

fail_service() {
  local svc="$1" why="$2" lf
  lf="$(logfile "$svc")"
  printf '[stack] ERROR: %s %s; last lines of %s:\n' "$svc" "$why" "$lf" >&2
  tail -n 40 "$lf" 2>/dev/null | sed 's/^/    /' >&2 || true
  return 1
}

# wait_all SVC=T0 ...: poll the started services together until each answers, exits or times out.
wait_all() {
  local -A t0=() pending=()
  local item svc pid rc=0 deadline
  for item in "$@"; do t0[${item%%=*}]="${item#*=}"; pending[${item%%=*}]=1; done
  deadline=$(( $(date +%s) + TIMEOUT ))
  while [ "${#pending[@]}" -gt 0 ]; do
    for svc in "${!pending[@]}"; do
      if answering "$svc"; then
        if ! our_pid "$svc" >/dev/null; then
          fail_service "$svc" "exited, while another process answers on its port" || rc=1
        else
          [ "$svc" = registry ] && registry_post_start
          log "$svc: answering after $(elapsed "${t0[$svc]}")s"
        fi
        unset "pending[$svc]"
      elif ! pid="$(our_pid "$svc")"; then
        fail_service "$svc" "exited before answering" || rc=1
        unset "pending[$svc]"
      elif [ "$(date +%s)" -ge "$deadline" ]; then
        fail_service "$svc" "not answering after ${TIMEOUT}s (pid $pid still running)" || rc=1
        unset "pending[$svc]"
      fi
    done
    [ "${#pending[@]}" -gt 0 ] && sleep 0.5
  done
  return "$rc"
}

resolve_services() {
  local s
  if [ "$#" = 0 ]; then printf '%s\n' "${ALL_SERVICES[@]}"; return; fi
  for s in "$@"; do service_of "$s"; done
}

lock() {
  mkdir -p "$STACK" "$PIDS" "$LOGS"
  exec 9>"$STACK/.lock"
  flock -w 900 9 || die "another stack.sh holds $STACK/.lock"
}

print_table() {
  local svc pid state
  printf '%-9s %-9s %-46s %-8s %s\n' SERVICE STATE ADDRESS PID LOG
  for svc in "$@"; do
    pid="$(our_pid "$svc" || echo -)"
    if answering "$svc"; then state=up; else state=DOWN; fi
    [ "$state" = up ] && [ "$pid" = - ] && pid=external
    printf '%-9s %-9s %-46s %-8s %s\n' "$svc" "$state" "$(service_addr "$svc")" "$pid" "$(logfile "$svc")"
  done
}

cmd_up() {
  local svcs svc c t0 rc=0
  mapfile -t svcs < <(resolve_services "$@")
  lock
  local comps=()
  for svc in "${svcs[@]}"; do
    for c in $(components_for "$svc"); do comps+=("$c"); done
  done
  cmd_fetch "${comps[@]}"
  declare -A started=()
  for svc in "${svcs[@]}"; do
    if answering "$svc"; then
      log "$svc: already answering"
      continue
    fi
    if our_pid "$svc" >/dev/null; then
      log "$svc: already started (pid $(our_pid "$svc")), waiting for it"
      started[$svc]="$(now)"
      continue
    fi
    if port_open "$(service_port "$svc")"; then
      die "$svc: port $(service_port "$svc") is taken by a process that does not answer as $svc"
    fi
    started[$svc]="$(now)"
    "start_$svc"
    log "$svc: started pid $(cat "$(pidfile "$svc")"), log $(logfile "$svc")"
  done
  local waits=()
  for svc in "${svcs[@]}"; do
    [ -n "${started[$svc]:-}" ] && waits+=("$svc=${started[$svc]}")
  done
  [ "${#waits[@]}" = 0 ] || wait_all "${waits[@]}" || rc=1
  print_table "${svcs[@]}"
  return "$rc"
}

stop_service() {
  local svc="$1" pid grace i
  if ! pid="$(our_pid "$svc")"; then
    rm -f "$(pidfile "$svc")"
    log "$svc: not running (no live pid file)"
    return 0
  fi
  case "$svc" in kafka) grace=60 ;; *) grace=20 ;; esac
  log "$svc: stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 $((grace * 5))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$svc: still running after ${grace}s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$(pidfile "$svc")"
  log "$svc: stopped"
}

cmd_down() {
  local svcs svc i
  mapfile -t svcs < <(resolve_services "$@")
  lock
  # reverse order: mongo, registry, kafka
  for ((i = ${#svcs[@]} - 1; i >= 0; i--)); do
    stop_service "${svcs[$i]}"
  done
  for svc in "${svcs[@]}"; do
    if port_open "$(service_port "$svc")"; then
      log "warning: port $(service_port "$svc") ($svc) is still open: a process not started by this script owns it"
    fi
  done
}

cmd_restart() {
  cmd_down "$@"
  exec 9>&-
  cmd_up "$@"
}

cmd_status() {
  local svcs svc rc=0 pid
  mapfile -t svcs < <(resolve_services "$@")
  printf '%-9s %-9s %-46s %-8s %s\n' SERVICE STATE ADDRESS PID LOG
  for svc in "${svcs[@]}"; do
    pid="$(our_pid "$svc" || echo -)"
    if answering "$svc"; then
      state=up
      [ "$pid" = - ] && pid=external
    elif [ "$pid" != - ]; then
      state=starting; rc=1
    else
      state=DOWN; rc=1
    fi
    printf '%-9s %-9s %-46s %-8s %s\n' "$svc" "$state" "$(service_addr "$svc")" "$pid" "$(logfile "$svc")"
  done
  return "$rc"
}

cmd_env() {
  cat <<EOF
export KAFKA_BOOTSTRAP_SERVERS=$KAFKA_ADDR
export SCHEMA_REGISTRY_URL=$CCOMPAT_URL
export MONGODB_URL=$MONGO_URL
export STREAMSCORE_CACHE=$CACHE
export PATH="$CACHE/npm/node_modules/.bin:\$PATH"
EOF
}

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

main() {
  local cmd="${1:-}"
  [ "$#" -gt 0 ] && shift
  case "$cmd" in
    fetch) cmd_fetch "$@" ;;
    up|start) cmd_up "$@" ;;
    down|stop) cmd_down "$@" ;;
    restart) cmd_restart "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env ;;
    logs) [ "$#" = 1 ] || usage; tail -n 100 -f "$(logfile "$(service_of "$1")")" ;;
    -h|--help|help) usage ;;
    *) usage ;;
  esac
}

main "$@"
