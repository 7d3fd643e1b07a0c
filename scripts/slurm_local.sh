#!/usr/bin/env bash
# A single-node SLURM cluster (with accounting) on this machine, for tests and trying the launcher:
#   scripts/slurm_local.sh start    # prints the line to run next: export SLURM_CONF=...
#   scripts/slurm_local.sh stop     # cancels every job, stops every daemon, removes the state folder
#   scripts/slurm_local.sh status   # exit code 0 while the cluster runs
# Needs root and Debian's slurm-wlm, munge, slurmdbd and mariadb-server. Everything (configs, state, logs,
# pid files, the database) lives in $PANDA_SLURM_DIR (default /tmp/panda-slurm); nothing under /etc changes.
# The node has this machine's CPUs and half of its memory; jobs run as root in the submitter's environment.
set -euo pipefail

DIR=${PANDA_SLURM_DIR:-/tmp/panda-slurm}
PORT=${PANDA_SLURM_PORT:-16817}  # slurmctld; slurmd, slurmdbd and mariadb take the next three ports
export SLURM_CONF=$DIR/slurm.conf
DAEMONS=(slurmd slurmctld slurmdbd mysqld munged)

log() { echo "slurm_local: $*" >&2; }

pid_of() { cat "$DIR/run/$1.pid" 2>/dev/null || true; }

alive() {
  local pid
  pid=$(pid_of "$1")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out waiting for $what; logs in $DIR/log"
      tail -n 5 "$DIR"/log/* >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

node_idle() { [[ $(sinfo -h -N -o %t 2>/dev/null) == idle ]]; }

queue_empty() { [[ -z $(squeue -h 2>/dev/null) ]]; }

write_configs() {
  local host cpus memory
  host=$(hostname)
  cpus=$(nproc)
  memory=$(($(free -m | awk '/^Mem:/ {print $2}') / 2))
  cat >"$DIR/slurm.conf" <<EOF
ClusterName=panda
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: a requeued job waits this long (default 120 s) before it starts again
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=5
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
# the munge socket of connections to slurmdbd (AuthInfo's is not used for them)
AccountingStoragePass=$DIR/munge/munge.socket
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
# refuse at submission a job the partition cannot run (more CPUs or memory than the node has)
EnforcePartLimits=ALL
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=300
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DIR/slurmdbd.conf" <<EOF
DbdHost=localhost
DbdPort=$((PORT + 2))
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
EOF
  chmod 600 "$DIR/slurmdbd.conf"
}

start() {
  if alive slurmctld; then
    log "already running"
    echo "export SLURM_CONF=$SLURM_CONF"
    return
  fi
  for tool in slurmctld slurmd slurmdbd munged mariadbd mysql_install_db sinfo; do
    command -v "$tool" >/dev/null || { log "$tool not found: apt-get install -y slurm-wlm munge slurmdbd mariadb-server"; exit 1; }
  done
  stop_daemons
  rm -rf "$DIR"
  mkdir -p "$DIR"/{run,log,state,spool,munge,mysql}
  chown munge: "$DIR/munge"
  write_configs

  runuser -u munge -- munged --socket="$DIR/munge/munge.socket" --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
  ln -sf "$DIR/munge/munged.pid" "$DIR/run/munged.pid"

  mysql_install_db --no-defaults --user=root --datadir="$DIR/mysql" --skip-test-db \
    --auth-root-authentication-method=normal >"$DIR/log/mysql_install_db.log" 2>&1
  # no grant tables: only this machine can connect (127.0.0.1) and the database is thrown away on stop
  setsid mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --skip-grant-tables \
    --bind-address=127.0.0.1 --port=$((PORT + 3)) --socket="$DIR/run/mysqld.sock" --pid-file="$DIR/run/mysqld.pid" \
    --log-error="$DIR/log/mysqld.log" --innodb-buffer-pool-size=16M </dev/null >/dev/null 2>&1 &
  wait_for 30 "mariadb" test -S "$DIR/run/mysqld.sock"

  slurmdbd  # reads slurmdbd.conf next to $SLURM_CONF
  wait_for 30 "slurmdbd" sacctmgr -i list cluster
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF"
  wait_for 60 "the node to become idle" node_idle
  log "running: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB')"
  echo "export SLURM_CONF=$SLURM_CONF"
}

stop_daemons() {
  if alive slurmctld; then
    scancel --full --quiet --partition=local || true
    wait_for 30 "an empty queue" queue_empty || true
  fi
  local name pid pids=()
  for name in "${DAEMONS[@]}"; do
    pid=$(pid_of "$name")
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && pids+=("$pid")
  done
  # wait until they are gone, so that a new cluster finds the ports free
  for pid in "${pids[@]}"; do
    wait_for 30 "process $pid to stop" bash -c "! kill -0 $pid" || true
  done
}

case ${1:-} in
  start) start ;;
  stop)
    stop_daemons
    rm -rf "$DIR"
    ;;
  status) alive slurmctld ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
