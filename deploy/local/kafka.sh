#!/usr/bin/env bash
# A local Apache Kafka broker (one combined KRaft node on 127.0.0.1) run from Maven Central jars; no Docker.
#
#   kafka.sh fetch                    resolve the broker jars into the cache (quick when cached)
#   kafka.sh start [options]          format storage if new, start in the background, wait, create the topics
#   kafka.sh stop|status [options]
#   kafka.sh create-topics [options]
#
# Options (or environment):
#   --data-dir DIR          KAFKA_DATA_DIR         default ${ARREARS_VAR:-./var}/kafka
#   --port N                KAFKA_PORT             default: as in the data dir's server.properties, else 9092
#   --controller-port N     KAFKA_CONTROLLER_PORT  default: likewise, else 9093
#   --timeout S             KAFKA_START_TIMEOUT    default 90 (seconds to wait for the broker)
# Also: ARREARS_CACHE (default ~/.cache/arrears), KAFKA_HEAP_OPTS (default -Xms512m -Xmx512m), KAFKA_JVM_OPTS
# (more JVM options, default none), JAVA_HOME (Java 17 or newer), PYTHON (default: the project's .venv/bin/python; topics are created with it).
#
# The data dir holds server.properties, broker.log, broker.pid and the KRaft storage (kraft/).
#
# kafka-cluster.sh (several nodes, replicated topics) sources this file for its fetch and node helpers.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
POM="$HERE/kafka/pom.xml"
LOG4J="$HERE/kafka/log4j2.xml"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
CACHE="${ARREARS_CACHE:-$HOME/.cache/arrears}"
LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
MANIFEST="$LIBS/MANIFEST.sha256"

DATA_DIR="${KAFKA_DATA_DIR:-${ARREARS_VAR:-./var}/kafka}"
PORT="${KAFKA_PORT:-}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT=30
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms512m -Xmx512m}"
JVM_OPTS="${KAFKA_JVM_OPTS:-}"
SCRIPT="$(basename "$0")"

die() { echo "$SCRIPT: $*" >&2; exit 1; }
log() { echo "$SCRIPT: $*" >&2; }

# The first errors of the broker log (the cause; the end is mostly shutdown noise), then its end.
show_log() {
  {
    grep -m 12 -E '^\[.*\] (ERROR|FATAL) |^[[:alnum:]_.$]+(Exception|Error): ' "$BROKER_LOG" || true
    echo "..."
    tail -n 20 "$BROKER_LOG"
  } >&2
}

# --- fetch -------------------------------------------------------------------------------------------------

# The cache is complete when it holds a copy of the current pom and every file listed in the manifest
# with its checksum, and no jar that the manifest does not list.
cache_complete() {
  [[ -f "$MANIFEST" ]] && cmp -s "$POM" "$LIBS/pom.xml" || return 1
  (cd "$LIBS" && sha256sum --check --status --strict MANIFEST.sha256 2>/dev/null) || return 1
  [[ "$(cd "$LIBS" && ls -- *.jar | wc -l)" == "$(grep -c '\.jar$' "$MANIFEST")" ]]
}

fetch() {
  mkdir -p "$CACHE"
  # Serialise concurrent fetches (parallel test sessions); the subshell keeps fd 9 away from the broker.
  (
    flock 9
    if cache_complete; then exit 0; fi
    log "fetching Kafka $KAFKA_VERSION from Maven Central into $LIBS"
    command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
    # A fresh folder each time: copy-dependencies never deletes jars left from an earlier version.
    tmp="$(mktemp -d "$CACHE/.kafka-$KAFKA_VERSION.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    mkdir "$tmp/libs"
    if ! mvn -B -q -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$tmp/libs" >"$tmp/mvn.log" 2>&1; then
      cat "$tmp/mvn.log" >&2
      die "mvn dependency:copy-dependencies failed"
    fi
    cp "$POM" "$tmp/libs/pom.xml"
    (cd "$tmp/libs" && sha256sum -- pom.xml *.jar >MANIFEST.sha256)
    # Renames within one file system: an interrupted fetch never leaves a half-filled libs folder.
    mkdir -p "$(dirname "$LIBS")"
    [[ -e "$LIBS" ]] && mv "$LIBS" "$tmp/old"
    mv "$tmp/libs" "$LIBS"
    log "cached $(grep -c '\.jar$' "$MANIFEST") jars"
  ) 9>"$CACHE/.kafka.lock"
}

# --- start / stop ------------------------------------------------------------------------------------------

parse_options() {
  while (($#)); do
    case "$1" in
      --data-dir) DATA_DIR="$2"; shift 2 ;;
      --port) PORT="$2"; shift 2 ;;
      --controller-port) CONTROLLER_PORT="$2"; shift 2 ;;
      --timeout) START_TIMEOUT="$2"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  mkdir -p "$DATA_DIR"
  DATA_DIR="$(cd "$DATA_DIR" && pwd)"
  node_paths "$DATA_DIR"
  if [[ -f "$PROPS" ]]; then
    : "${PORT:=$(sed -n 's|^listeners=PLAINTEXT://127.0.0.1:\([0-9]*\).*|\1|p' "$PROPS")}"
    : "${CONTROLLER_PORT:=$(sed -n 's|^controller.quorum.bootstrap.servers=127.0.0.1:||p' "$PROPS")}"
  fi
  : "${PORT:=9092}" "${CONTROLLER_PORT:=9093}"
}

# A node's files: its data dir (absolute) holds them all.
node_paths() {
  DATA_DIR="$1"
  PID_FILE="$DATA_DIR/broker.pid"
  BROKER_LOG="$DATA_DIR/broker.log"
  PROPS="$DATA_DIR/server.properties"
}

# The pid of the running broker of this data dir, or nothing (a stale pid file is removed).
running_pid() {
  [[ -f "$PID_FILE" ]] || return 0
  local pid
  pid="$(<"$PID_FILE")"
  if [[ -n "$pid" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $PROPS"; then
    echo "$pid"
  else
    rm -f "$PID_FILE"
  fi
}

write_properties() {
  cat <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA_DIR/kraft
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
}

# A Kafka Uuid: 16 random bytes in unpadded base64url, as `StorageTool random-uuid` prints (which costs a
# second of JVM start); like Kafka, avoid a leading '-', which the tool would take for an option.
new_uuid() {
  local uuid="-"
  while [[ "$uuid" == -* ]]; do
    uuid="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
  done
  echo "$uuid"
}

# format_storage CLUSTER_ID QUORUM_OPTION...: format the node's KRaft storage (its PROPS, log.dirs).
format_storage() {
  local cluster_id="$1"
  shift
  if ! "$JAVA" -cp "$LIBS/*" kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" "$@" \
      >"$DATA_DIR/format.log" 2>&1; then
    cat "$DATA_DIR/format.log" >&2
    die "formatting $DATA_DIR/kraft failed"
  fi
}

# Start the node of PROPS in the background and record its pid.
launch() {
  # setsid: the broker outlives this script and does not get the caller's terminal signals.
  # shellcheck disable=SC2086
  setsid "$JAVA" $HEAP_OPTS $JVM_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$LOG4J" \
    -cp "$LIBS/*" kafka.Kafka "$PROPS" </dev/null >"$BROKER_LOG" 2>&1 &
  echo "$!" >"$PID_FILE"
}

# await_started PID STARTED: wait until the node of BROKER_LOG logs that it serves; STARTED is the
# $SECONDS it was launched at. Fails (after showing the log) if it exits or START_TIMEOUT passes.
await_started() {
  local pid="$1" started="$2"
  until grep -q "Kafka Server started" "$BROKER_LOG"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      show_log
      log "the broker exited during start-up; log: $BROKER_LOG"
      return 1
    fi
    if ((SECONDS - started >= START_TIMEOUT)); then
      show_log
      log "the broker did not start within $START_TIMEOUT s; log: $BROKER_LOG"
      return 1
    fi
    sleep 0.2
  done
}

# terminate PID...: SIGTERM to each, then wait for all of them; SIGKILL to those left after STOP_TIMEOUT.
terminate() {
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  local waited=0 pid alive
  while ((waited < STOP_TIMEOUT * 5)); do
    alive=0
    for pid in "$@"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    ((alive)) || return 0
    sleep 0.2
    waited=$((waited + 1))
  done
  for pid in "$@"; do
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid still running after $STOP_TIMEOUT s, killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

start() {
  fetch
  local pid
  pid="$(running_pid)"
  local props
  props="$(write_properties)"
  if [[ -n "$pid" ]]; then
    [[ "$props" == "$(cat "$PROPS")" ]] || die "already running (pid $pid) with other settings: $PROPS"
    log "already running (pid $pid) on 127.0.0.1:$PORT"
  else
    if [[ -f "$DATA_DIR/kraft/meta.properties" ]]; then
      # The formatted storage remembers the controller's address, so the settings may not change.
      [[ "$props" == "$(cat "$PROPS" 2>/dev/null)" ]] ||
        die "$DATA_DIR was formatted for other ports: use those, or remove $DATA_DIR"
    else
      echo "$props" >"$PROPS"
      format_storage "$(new_uuid)" --standalone
    fi

    local started=$SECONDS
    launch
    pid="$(<"$PID_FILE")"
    if ! await_started "$pid" "$started"; then
      stop
      die "start failed"
    fi
    log "Kafka $KAFKA_VERSION up on 127.0.0.1:$PORT in $((SECONDS - started)) s (pid $pid, log $BROKER_LOG)"
  fi
  create_topics || { show_log; die "creating the topics failed"; }
}

stop() {
  local pid
  pid="$(running_pid)"
  if [[ -z "$pid" ]]; then
    log "not running"
    return 0
  fi
  terminate "$pid"
  rm -f "$PID_FILE"
  log "stopped"
}

status() {
  local pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    echo "running pid=$pid bootstrap=127.0.0.1:$PORT data=$DATA_DIR"
  else
    echo "stopped data=$DATA_DIR"
    return 3
  fi
}

# The project's own interpreter, never whatever python3 is first on the PATH (it lacks aiokafka).
project_python() {
  local python="${PYTHON:-$REPO/.venv/bin/python}"
  [[ -x "$python" ]] || die "no Python at $python: run 'make test' (or any make target) to build .venv, or set PYTHON"
  echo "$python"
}

create_topics() {
  local python
  python="$(project_python)"
  (cd "$REPO" && "$python" -m services.runtime.kafka_admin --bootstrap "127.0.0.1:$PORT")
}

# Sourced (by kafka-cluster.sh): the functions only.
[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0

cmd="${1:-}"
shift || true
case "$cmd" in
  fetch) fetch; echo "$LIBS" ;;
  start) parse_options "$@"; start ;;
  stop) parse_options "$@"; stop ;;
  status) parse_options "$@"; status ;;
  create-topics) parse_options "$@"; create_topics ;;
  *) sed -n '2,19s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
