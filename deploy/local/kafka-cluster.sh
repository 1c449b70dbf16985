#!/usr/bin/env bash
# A local Apache Kafka cluster on 127.0.0.1: N combined broker+controller KRaft nodes (default 3) sharing
# one dynamic controller quorum, run from the same Maven Central jars as kafka.sh; no Docker.
#
#   kafka-cluster.sh start [options]          format new nodes, start every node, wait, create the topics
#   kafka-cluster.sh stop|status [options]    stop every node (SIGTERM, all at once) | show each node
#   kafka-cluster.sh kill [options]           kill every node with SIGKILL (quick, before removing DIR)
#   kafka-cluster.sh stop-node N [options]    stop node N (SIGTERM: a controlled shutdown)
#   kafka-cluster.sh kill-node N [options]    kill node N with SIGKILL (as a crash would)
#   kafka-cluster.sh start-node N [options]   start node N again and wait until it serves
#   kafka-cluster.sh create-topics [options]  create the topic catalogue (replicated) if missing
#   kafka-cluster.sh bootstrap [options]      print the bootstrap servers, host:port,...
#
# Options (or environment):
#   --dir DIR                 KAFKA_CLUSTER_DIR       default ${ARREARS_VAR:-./var}/kafka-cluster
#   --nodes N                 KAFKA_NODES             default: as the dir was formatted, else 3
#   --ports P1,P2,...         KAFKA_PORTS             broker ports; default as formatted, else 9192,9292,9392,...
#   --controller-ports C1,... KAFKA_CONTROLLER_PORTS  default as formatted, else 9193,9293,9393,...
#   --timeout S               KAFKA_START_TIMEOUT     default 90 (seconds to wait for the nodes)
# Also: KAFKA_HEAP_OPTS (default -Xms256m -Xmx384m per node), KAFKA_JVM_OPTS (default -XX:TieredStopAtLevel=1:
# the quick compiler alone, so that N nodes start, and a node comes back, in seconds on a small machine) and
# the rest of what kafka.sh reads.
#
# Topics (the catalogue and Kafka's internal ones) get replication factor min(3, N) and min.insync.replicas
# a majority of it (2 of 3): with three nodes, one may die and every acknowledged write survives. Node i has
# node id i and keeps server.properties, broker.log, broker.pid and its KRaft storage in DIR/node-i; DIR/
# cluster.conf records the nodes, ports, cluster id and controller directory ids the storage was formatted
# with (remove DIR to start afresh).
set -euo pipefail

CLUSTER_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local/kafka.sh
source "$CLUSTER_HERE/kafka.sh"

CLUSTER_DIR="${KAFKA_CLUSTER_DIR:-${ARREARS_VAR:-./var}/kafka-cluster}"
NODES="${KAFKA_NODES:-}"
PORTS="${KAFKA_PORTS:-}"
CONTROLLER_PORTS="${KAFKA_CONTROLLER_PORTS:-}"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx384m}"
JVM_OPTS="${KAFKA_JVM_OPTS:--XX:TieredStopAtLevel=1}"
# How long a node may miss heartbeats (one a second) before the controller fences it: then its partitions
# get other leaders and it leaves their in-sync replicas, so writes go on without it.
SESSION_TIMEOUT_MS=6000

parse_cluster_options() {
  while (($#)); do
    case "$1" in
      --dir) CLUSTER_DIR="$2"; shift 2 ;;
      --nodes) NODES="$2"; shift 2 ;;
      --ports) PORTS="$2"; shift 2 ;;
      --controller-ports) CONTROLLER_PORTS="$2"; shift 2 ;;
      --timeout) START_TIMEOUT="$2"; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  mkdir -p "$CLUSTER_DIR"
  CLUSTER_DIR="$(cd "$CLUSTER_DIR" && pwd)"
  CONF="$CLUSTER_DIR/cluster.conf"
  if [[ -f "$CONF" ]]; then
    local key given recorded
    for key in nodes ports controller_ports; do
      given="$(option_of "$key")"
      recorded="$(conf_value "$key")"
      [[ -z "$given" || "$given" == "$recorded" ]] ||
        die "$CLUSTER_DIR was formatted with $key=$recorded: use that, or remove $CLUSTER_DIR"
    done
    NODES="$(conf_value nodes)"
    PORTS="$(conf_value ports)"
    CONTROLLER_PORTS="$(conf_value controller_ports)"
  else
    : "${NODES:=3}"
    [[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive number, not '$NODES'"
    if [[ -z "$PORTS" || -z "$CONTROLLER_PORTS" ]]; then
      ((NODES <= 9)) || die "name --ports and --controller-ports for more than 9 nodes"
      local i defaults=() controller_defaults=()
      for ((i = 1; i <= NODES; i++)); do
        defaults+=("9${i}92")
        controller_defaults+=("9${i}93")
      done
      : "${PORTS:=$(IFS=,; echo "${defaults[*]}")}"
      : "${CONTROLLER_PORTS:=$(IFS=,; echo "${controller_defaults[*]}")}"
    fi
  fi
  IFS=, read -r -a PORT_LIST <<<"$PORTS"
  IFS=, read -r -a CONTROLLER_PORT_LIST <<<"$CONTROLLER_PORTS"
  ((${#PORT_LIST[@]} == NODES && ${#CONTROLLER_PORT_LIST[@]} == NODES)) ||
    die "$NODES nodes need $NODES broker ports and $NODES controller ports ($PORTS; $CONTROLLER_PORTS)"
  REPLICATION_FACTOR=$((NODES < 3 ? NODES : 3))
  MIN_INSYNC=$((REPLICATION_FACTOR / 2 + 1))
}

option_of() {
  case "$1" in
    nodes) echo "$NODES" ;;
    ports) echo "$PORTS" ;;
    controller_ports) echo "$CONTROLLER_PORTS" ;;
  esac
}

conf_value() { sed -n "s|^$1=||p" "$CONF"; }

bootstrap_servers() {
  local port servers=()
  for port in "${PORT_LIST[@]}"; do
    servers+=("127.0.0.1:$port")
  done
  (IFS=,; echo "${servers[*]}")
}

controller_servers() {
  local port servers=()
  for port in "${CONTROLLER_PORT_LIST[@]}"; do
    servers+=("127.0.0.1:$port")
  done
  (IFS=,; echo "${servers[*]}")
}

# Point kafka.sh's node variables (DATA_DIR, PROPS, BROKER_LOG, PID_FILE, PORT, CONTROLLER_PORT) at node $1.
select_node() {
  local node="$1"
  if ! [[ "$node" =~ ^[0-9]+$ ]] || ((node < 1 || node > NODES)); then
    die "no node '$node' (nodes are 1..$NODES)"
  fi
  mkdir -p "$CLUSTER_DIR/node-$node"
  node_paths "$CLUSTER_DIR/node-$node"
  PORT="${PORT_LIST[node - 1]}"
  CONTROLLER_PORT="${CONTROLLER_PORT_LIST[node - 1]}"
}

node_properties() {
  cat <<EOF
process.roles=broker,controller
node.id=$1
controller.quorum.bootstrap.servers=$(controller_servers)
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA_DIR/kraft
num.partitions=1
default.replication.factor=$REPLICATION_FACTOR
min.insync.replicas=$MIN_INSYNC
unclean.leader.election.enable=false
offsets.topic.replication.factor=$REPLICATION_FACTOR
transaction.state.log.replication.factor=$REPLICATION_FACTOR
transaction.state.log.min.isr=$MIN_INSYNC
share.coordinator.state.topic.replication.factor=$REPLICATION_FACTOR
share.coordinator.state.topic.min.isr=$MIN_INSYNC
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=$SESSION_TIMEOUT_MS
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
}

# Record the cluster's identity once: every node is formatted with the same cluster id and the same
# initial controllers (node id, controller address, metadata directory id).
write_conf() {
  [[ -f "$CONF" ]] && return 0
  local i directory_ids=()
  for ((i = 1; i <= NODES; i++)); do
    directory_ids+=("$(new_uuid)")
  done
  cat >"$CONF.tmp" <<EOF
nodes=$NODES
ports=$PORTS
controller_ports=$CONTROLLER_PORTS
cluster_id=$(new_uuid)
directory_ids=$(IFS=,; echo "${directory_ids[*]}")
EOF
  mv "$CONF.tmp" "$CONF"
}

initial_controllers() {
  local i ids voters=()
  IFS=, read -r -a ids <<<"$(conf_value directory_ids)"
  for ((i = 1; i <= NODES; i++)); do
    voters+=("$i@127.0.0.1:${CONTROLLER_PORT_LIST[i - 1]}:${ids[i - 1]}")
  done
  (IFS=,; echo "${voters[*]}")
}

# Write node $1's properties and format its storage, unless it is formatted (then they may not change).
prepare_node() {
  local node="$1" props
  select_node "$node"
  props="$(node_properties "$node")"
  if [[ -f "$DATA_DIR/kraft/meta.properties" ]]; then
    [[ "$props" == "$(cat "$PROPS" 2>/dev/null)" ]] ||
      die "node $node in $DATA_DIR was formatted with other settings: remove $CLUSTER_DIR to start afresh"
  else
    echo "$props" >"$PROPS"
    format_storage "$(conf_value cluster_id)" --initial-controllers "$(initial_controllers)"
  fi
}

# --- commands ------------------------------------------------------------------------------------------

cluster_start() {
  fetch
  write_conf
  local node pid formatting=() launched=() started=$SECONDS
  # Formatting starts a JVM per node: side by side.
  for ((node = 1; node <= NODES; node++)); do
    prepare_node "$node" &
    formatting+=("$!")
  done
  for pid in "${formatting[@]}"; do
    wait "$pid" || die "formatting failed"
  done
  # Every node at once: a node serves only once a quorum of controllers has elected a leader.
  for ((node = 1; node <= NODES; node++)); do
    select_node "$node"
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
      log "node $node already running (pid $pid) on 127.0.0.1:$PORT"
    else
      launch
      launched+=("$node")
    fi
  done
  for node in "${launched[@]}"; do
    select_node "$node"
    if ! await_started "$(<"$PID_FILE")" "$started"; then
      cluster_stop
      die "node $node did not start"
    fi
  done
  log "Kafka $KAFKA_VERSION cluster of $NODES nodes up on $(bootstrap_servers) in $((SECONDS - started)) s"
  create_cluster_topics || die "creating the topics failed"
}

cluster_stop() {
  local node pid pids=()
  for ((node = 1; node <= NODES; node++)); do
    select_node "$node"
    pid="$(running_pid)"
    [[ -n "$pid" ]] && pids+=("$pid")
  done
  if ((${#pids[@]} == 0)); then
    log "not running"
    return 0
  fi
  # All at once: a node stopping alone after the others would wait for a controller quorum that is gone.
  terminate "${pids[@]}"
  for ((node = 1; node <= NODES; node++)); do
    select_node "$node"
    rm -f "$PID_FILE"
  done
  log "stopped"
}

cluster_status() {
  local node pid down=0
  for ((node = 1; node <= NODES; node++)); do
    select_node "$node"
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then
      echo "node $node running pid=$pid 127.0.0.1:$PORT controller=127.0.0.1:$CONTROLLER_PORT"
    else
      echo "node $node stopped 127.0.0.1:$PORT"
      down=$((down + 1))
    fi
  done
  echo "bootstrap=$(bootstrap_servers) data=$CLUSTER_DIR"
  ((down == 0)) || return 3
}

node_stop() {
  select_node "$1"
  local pid
  pid="$(running_pid)"
  [[ -n "$pid" ]] || { log "node $1 is not running"; return 0; }
  terminate "$pid"
  rm -f "$PID_FILE"
  log "node $1 stopped"
}

node_kill() {
  select_node "$1"
  local pid
  pid="$(running_pid)"
  [[ -n "$pid" ]] || { log "node $1 is not running"; return 0; }
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.05
  done
  rm -f "$PID_FILE"
  log "node $1 killed (pid $pid)"
}

cluster_kill() {
  local node
  for ((node = 1; node <= NODES; node++)); do
    node_kill "$node"
  done
}

node_start() {
  fetch
  select_node "$1"
  [[ -f "$DATA_DIR/kraft/meta.properties" ]] || die "node $1 is not formatted: run start first"
  local pid started=$SECONDS
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    log "node $1 already running (pid $pid)"
    return 0
  fi
  launch
  await_started "$(<"$PID_FILE")" "$started" || die "node $1 did not start"
  log "node $1 up on 127.0.0.1:$PORT in $((SECONDS - started)) s"
}

create_cluster_topics() {
  local python
  python="$(project_python)"
  (cd "$REPO" && "$python" -m services.runtime.kafka_admin --bootstrap "$(bootstrap_servers)" \
    --replication-factor "$REPLICATION_FACTOR")
}

cluster_cmd="${1:-}"
shift || true
case "$cluster_cmd" in
  start) parse_cluster_options "$@"; cluster_start ;;
  stop) parse_cluster_options "$@"; cluster_stop ;;
  kill) parse_cluster_options "$@"; cluster_kill ;;
  status) parse_cluster_options "$@"; cluster_status ;;
  stop-node|kill-node|start-node)
    (($#)) || die "$cluster_cmd needs a node number"
    node_arg="$1"
    shift
    parse_cluster_options "$@"
    [[ -f "$CONF" ]] || die "no cluster in $CLUSTER_DIR: run start first"
    case "$cluster_cmd" in
      stop-node) node_stop "$node_arg" ;;
      kill-node) node_kill "$node_arg" ;;
      start-node) node_start "$node_arg" ;;
    esac
    ;;
  create-topics) parse_cluster_options "$@"; create_cluster_topics ;;
  bootstrap) parse_cluster_options "$@"; bootstrap_servers ;;
  *) sed -n '2,28s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
