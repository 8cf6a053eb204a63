#!/usr/bin/env bash
# A private single-node Slurm cluster, with accounting, on 127.0.0.1 for tests and CI.
#   bash cluster/local_slurm.sh install   apt-get the packages if missing
#   bash cluster/local_slurm.sh start     start (idempotent); waits until a job could run
#   bash cluster/local_slurm.sh stop      cancel jobs, stop what start started (idempotent)
#   bash cluster/local_slurm.sh status    one line; exit 0 only if healthy
#   bash cluster/local_slurm.sh env       eval "$(bash cluster/local_slurm.sh env)" for clients
#
# Everything (configs, munge key and socket, MariaDB datadir, state, logs, pid files)
# lives under FINALBN_SLURM_DIR, so the cluster never touches the system's munge key,
# MariaDB or /etc/slurm. Accounting is not optional: submitit reads job states from sacct.
# Facts behind the choices: shared/reference/local_clusters.md.
# Overrides: FINALBN_SLURM_DIR, FINALBN_SLURMCTLD_PORT, FINALBN_SLURMD_PORT,
# FINALBN_SLURMDBD_PORT, FINALBN_MARIADB_PORT, FINALBN_SLURM_START_TIMEOUT (seconds).
set -euo pipefail

DIR=${FINALBN_SLURM_DIR:-/tmp/finalbn-slurm}
CTLD_PORT=${FINALBN_SLURMCTLD_PORT:-16817}
SLURMD_PORT=${FINALBN_SLURMD_PORT:-16818}
DBD_PORT=${FINALBN_SLURMDBD_PORT:-16819}
DB_PORT=${FINALBN_MARIADB_PORT:-13306}
START_TIMEOUT=${FINALBN_SLURM_START_TIMEOUT:-120}
CLUSTER=finalbn
ACCOUNT=finalbn
PARTITION=debug
MAX_ARRAY_SIZE=1001
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

# Daemons live in sbin, which a non-root PATH often lacks.
export PATH="$PATH:/usr/sbin:/sbin"
# slurmdbd has no -f flag: it finds slurmdbd.conf beside $SLURM_CONF.
export SLURM_CONF="$DIR/etc/slurm.conf"
MUNGE_SOCKET="$DIR/munge/munge.socket"
DB_SOCKET="$DIR/run/mariadb.sock"

log() { echo "local_slurm: $*" >&2; }

# Every client call goes through here: without a reachable daemon Slurm clients retry
# for a minute or more instead of failing.
q() { timeout 10 "$@"; }

as_root() {
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { log "needs root (or sudo) to $1"; exit 1; }
    exec sudo -E bash "$0" "$@"
  fi
}

# --- processes we started: known only through our own pid files -------------------

# The pid file alone is not enough: after a reboot or crash the pid may be reused.
alive() { # pidfile comm
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && running "$pid"
}

# A dead daemon stays a zombie until PID 1 reaps it, which here can take seconds.
running() { [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }

port_busy() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# A busy port that is not ours would let another cluster answer our readiness checks.
need_port() { # port what variable
  if port_busy "$1"; then
    fail "port $1 for $2 is taken by a process this script did not start (set $3 to another port)"
  fi
}

DEADLINE=0
wait_for() { # description command...
  local what=$1
  shift
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$DEADLINE" ]; then
      fail "timed out after ${START_TIMEOUT}s waiting for $what"
    fi
    sleep 0.2 # poll interval, bounded by DEADLINE
  done
}

fail() {
  log "$*"
  local f
  for f in "$DIR"/log/*.log "$DIR"/munge/munged.log; do
    [ -s "$f" ] || continue
    echo "----- tail $f" >&2
    tail -n 15 "$f" >&2
  done
  exit 1
}

# --- configuration ----------------------------------------------------------------

write_configs() {
  local host node real_mem topo
  host=$(hostname -s)
  # slurmd -C reads the hardware and needs no config; 95 % of memory leaves slurmd room
  # so the node does not come up drained for "Low RealMemory".
  node=$(q slurmd -C | head -n 1)
  real_mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
  topo=$(grep -o 'CPUs=[0-9]* Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*' <<<"$node")
  [ -n "$real_mem" ] && [ -n "$topo" ] || fail "could not read the node's hardware from 'slurmd -C': $node"
  real_mem=$((real_mem * 95 / 100))

  # The munge socket is ours, named in AuthInfo, so clients find it through slurm.conf alone.
  # cred_expire=10: a requeued job otherwise waits 120 s before it may start again.
  cat >"$SLURM_CONF.tmp" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups here: track processes by parentage, enforce nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
# A node that was down (an unclean stop) comes back by itself.
ReturnToService=2
# Set explicitly: the backend reads it with 'scontrol show config'.
MaxArraySize=$MAX_ARRAY_SIZE
# Cancelled test jobs die quickly, so stop does not wait 30 s per job.
KillWait=5
# Schedule at once instead of batching: array round trips of ~1 s, not ~4 s.
SchedulerParameters=batch_sched_delay=0,bf_interval=5,sched_interval=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# Clients authenticate to slurmdbd through the munge socket named here, not in AuthInfo.
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 $topo RealMemory=$real_mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$SLURM_CONF.tmp" "$SLURM_CONF"

  # slurmdbd refuses a config readable by others or not owned by SlurmUser.
  (
    umask 077
    cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=$host
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StorageLoc=slurm_acct_db
EOF
  )
  chown root:root "$DIR/etc/slurmdbd.conf"
  chmod 600 "$DIR/etc/slurmdbd.conf"
}

# --- the daemons, in start order --------------------------------------------------

munge_works() { munge -n --socket="$MUNGE_SOCKET" | unmunge --socket="$MUNGE_SOCKET"; }

start_munged() {
  alive "$DIR/munge/munged.pid" munged && return 0
  # Our own key, never /etc/munge/munge.key: that one may belong to a real cluster.
  if [ ! -s "$DIR/munge/munge.key" ]; then
    mungekey --create --keyfile="$DIR/munge/munge.key"
  fi
  chown -R munge:munge "$DIR/munge"
  chmod 400 "$DIR/munge/munge.key"
  rm -f "$MUNGE_SOCKET"
  # munged refuses to run as root.
  runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed" ||
    fail "munged did not start"
  wait_for "munged to answer" munge_works
}

db_ping() { mariadb-admin --no-defaults --socket="$DB_SOCKET" -u root ping; }

start_mariadb() {
  alive "$DIR/run/mariadb.pid" mariadbd && return 0
  need_port "$DB_PORT" MariaDB FINALBN_MARIADB_PORT
  if [ ! -d "$DIR/mysql/mysql" ]; then
    rm -rf "$DIR/mysql"
    mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" \
      --auth-root-authentication-method=socket --skip-test-db >"$DIR/log/mariadb-install.txt" 2>&1 ||
      fail "mariadb-install-db failed (see $DIR/log/mariadb-install.txt)"
  fi
  # mariadbd does not daemonize: detach it from our session so it outlives this script.
  setsid mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --tmpdir="$DIR/tmp" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --socket="$DB_SOCKET" --skip-name-resolve \
    --pid-file="$DIR/run/mariadb.pid" --log-error="$DIR/log/mariadb.log" \
    --innodb-buffer-pool-size=64M </dev/null >>"$DIR/log/mariadb.log" 2>&1 &
  wait_for "MariaDB to answer on $DB_SOCKET" db_ping
  # slurmdbd speaks TCP only; with skip-name-resolve this user matches 127.0.0.1 exactly.
  mariadb --no-defaults --socket="$DB_SOCKET" -u root -e \
    "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" ||
    fail "could not create the slurm database user"
}

start_slurmdbd() {
  if ! alive "$DIR/run/slurmdbd.pid" slurmdbd; then
    need_port "$DBD_PORT" slurmdbd FINALBN_SLURMDBD_PORT
    slurmdbd || fail "slurmdbd did not start"
  fi
  wait_for "slurmdbd to answer" q sacctmgr -n show cluster
  # Register the cluster before slurmctld starts, so slurmctld's first contact succeeds.
  if [ -z "$(q sacctmgr -n -P show cluster "$CLUSTER" format=cluster)" ]; then
    q sacctmgr -i add cluster "$CLUSTER" >/dev/null || fail "sacctmgr could not add cluster $CLUSTER"
  fi
  if [ -z "$(q sacctmgr -n -P show account "$ACCOUNT" format=account)" ]; then
    q sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description=tests organization=finalbn >/dev/null ||
      fail "sacctmgr could not add account $ACCOUNT"
  fi
  if ! q sacctmgr -n -P show assoc where user=root account="$ACCOUNT" format=user | grep -q root; then
    q sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null ||
      fail "sacctmgr could not add user root"
  fi
}

ctld_up() { q scontrol ping | grep -q 'is UP'; }

start_slurmctld() {
  alive "$DIR/run/slurmctld.pid" slurmctld && return 0
  need_port "$CTLD_PORT" slurmctld FINALBN_SLURMCTLD_PORT
  slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
  wait_for "slurmctld to answer 'scontrol ping'" ctld_up
}

node_state() { q sinfo -h -N -p "$PARTITION" -o %T | head -n 1; }
node_usable() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }
sacct_answers() { q sacct -n -X -o JobID -S now; }

start_slurmd() {
  alive "$DIR/run/slurmd.pid" slurmd && return 0
  need_port "$SLURMD_PORT" slurmd FINALBN_SLURMD_PORT
  slurmd -f "$SLURM_CONF" || fail "slurmd did not start"
}

healthy() {
  local pair
  for pair in munge/munged.pid:munged run/mariadb.pid:mariadbd run/slurmdbd.pid:slurmdbd \
    run/slurmctld.pid:slurmctld run/slurmd.pid:slurmd; do
    if ! alive "$DIR/${pair%%:*}" "${pair##*:}"; then
      WHY="${pair##*:} is not running"
      return 1
    fi
  done
  ctld_up || { WHY="slurmctld does not answer"; return 1; }
  node_usable || { WHY="node is '$(node_state)'"; return 1; }
  sacct_answers >/dev/null 2>&1 || { WHY="sacct does not answer"; return 1; }
}

# --- commands ---------------------------------------------------------------------

cmd_install() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "installing ${missing[*]}"
  $sudo apt-get update -qq >/dev/null
  # Through env: sudo would drop a plain DEBIAN_FRONTEND=... prefix.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

cmd_start() {
  as_root start
  command -v slurmctld >/dev/null 2>&1 || fail "Slurm is not installed: run 'bash cluster/local_slurm.sh install'"
  if [ -s "$SLURM_CONF" ] && healthy; then
    log "already up ($SLURM_CONF)"
    return 0
  fi
  DEADLINE=$(($(date +%s) + START_TIMEOUT))
  # Traversable by all, so non-root clients reach slurm.conf and the munge socket.
  mkdir -p "$DIR"/{etc,munge,run,log,state,spool,tmp}
  chmod 755 "$DIR" "$DIR/etc" "$DIR/munge"
  chmod 1777 "$DIR/tmp"
  # Config before any client call: without one, clients retry for a minute.
  write_configs
  start_munged
  start_mariadb
  start_slurmdbd
  start_slurmctld
  start_slurmd
  # Usable rather than idle: jobs that outlived a crashed slurmctld may still hold the node.
  wait_for "the node to be idle in partition $PARTITION" node_usable
  wait_for "sacct to answer" sacct_answers
  log "up in $((START_TIMEOUT - DEADLINE + $(date +%s)))s: $(hostname -s) $(node_state) in partition $PARTITION, SLURM_CONF=$SLURM_CONF"
}

any_running() {
  local pid
  for pid in "$@"; do running "$pid" && return 0; done
  return 1
}

# Signal a group of our daemons together, then wait for all of them (30 s, then SIGKILL).
stop_daemons() { # pidfile:comm...
  local pair pids=() pid i
  for pair in "$@"; do
    alive "$DIR/${pair%%:*}" "${pair##*:}" && pids+=("$(cat "$DIR/${pair%%:*}")")
  done
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
      any_running "${pids[@]}" || break
      sleep 0.1
    done
    for pid in "${pids[@]}"; do
      if running "$pid"; then
        log "$(cat "/proc/$pid/comm") ($pid) ignored SIGTERM for 30 s; killing it"
        kill -9 "$pid" 2>/dev/null || true
      fi
    done
  fi
  for pair in "$@"; do rm -f "$DIR/${pair%%:*}"; done
}

cmd_stop() {
  as_root stop
  local ids i
  # Jobs outlive slurmd (no cgroups): cancel them while slurmctld and slurmd can still do it.
  if alive "$DIR/run/slurmctld.pid" slurmctld; then
    ids=$(q squeue -h -o %A 2>/dev/null || true)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086
      q scancel $ids 2>/dev/null || true
      for ((i = 0; i < 150; i++)); do # KillWait=5, so this takes seconds
        [ -z "$(q squeue -h -o %A 2>/dev/null)" ] && break
        sleep 0.2
      done
      [ -n "$(q squeue -h -o %A 2>/dev/null)" ] && log "jobs still listed after scancel: $(q squeue -h -o %A | tr '\n' ' ')"
    fi
  fi
  # slurmctld flushes job records to slurmdbd on the way down, so the database goes last.
  stop_daemons run/slurmd.pid:slurmd run/slurmctld.pid:slurmctld
  stop_daemons run/slurmdbd.pid:slurmdbd
  stop_daemons run/mariadb.pid:mariadbd munge/munged.pid:munged
  log "stopped"
}

cmd_status() {
  WHY=""
  if [ -s "$SLURM_CONF" ] && healthy; then
    echo "up: $(hostname -s) $(node_state) in partition $PARTITION, SLURM_CONF=$SLURM_CONF"
  else
    echo "down: ${WHY:-no config at $SLURM_CONF}"
    return 1
  fi
}

cmd_env() {
  echo "export SLURM_CONF=$SLURM_CONF"
  echo "export FINALBN_SLURM_DIR=$DIR"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *)
    echo "usage: bash cluster/local_slurm.sh {install|start|stop|status|env}" >&2
    exit 2
    ;;
esac
