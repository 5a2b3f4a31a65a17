#!/usr/bin/env bash
# Install (Debian packages) and start a single-node SLURM cluster with accounting, for the
# tests marked `slurm` (tests/test_slurm.py). Root, no systemd: every daemon is started
# directly. Safe to run again: installed packages, the munge key, the database password and
# running daemons are kept.
#
#   bash .ci/slurm/start.sh            install if needed, write configs, start what is down
#   bash .ci/slurm/start.sh --restart  also restart the SLURM daemons (after a config change)
#
# Cluster `local`; node `hostname -s` declared with SLURM_CPUS CPUs (default 32), SLURM_MEM_MB
# memory (default 128000) and SLURM_GPUS GPUs of GRES type `gpu` (default 2, placeholder
# device files), more than a CI machine has (`SlurmdParameters=config_overrides`), so that
# sbatch accepts the shipped SLURM profile's requests unchanged (8 CPUs, 32 GB and a GPU per
# training job); the jobs then share the real cores and run on the CPU. Partitions `cpu`
# (default) and `gpu`: the same node under two names. Account `default` (root is a member): the executor plugin checks
# `slurm_account` against `sacctmgr`. slurmdbd + MariaDB make `sacct` work, which the plugin
# polls for job states. Exit status 0 only when `sinfo` shows the node up.
set -euo pipefail
H=$(hostname -s)
RESTART=0
[ "${1:-}" = "--restart" ] && RESTART=1
CONF=/etc/slurm/slurm.conf
DBDCONF=/etc/slurm/slurmdbd.conf
log() { echo "[slurm] $*"; }
die() { echo "[slurm] ERROR: $*" >&2; exit 1; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local n=$1 what=$2; shift 2
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  die "$what did not come up (see /var/log/slurm/, /var/log/munge/, /var/log/mysqld_safe.out)"
}
stop_pidfile() {  # stop_pidfile PIDFILE COMM: stop the daemon named in its pid file only
  local f=$1 comm=$2 pid
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  if [ -n "$pid" ] && [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = "$comm" ]; then
    log "stopping $comm (pid $pid)"; kill "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  fi
  rm -f "$f"
}

install_packages() {
  local pkgs="slurm-wlm slurmctld slurmd slurm-client slurmdbd munge mariadb-server mariadb-client"
  # shellcheck disable=SC2086
  dpkg -s $pkgs >/dev/null 2>&1 && return 0
  [ "$(id -u)" = 0 ] || die "not root: cannot install $pkgs"
  log "installing $pkgs"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $pkgs
}

write_slurm_conf() {
  local cpus=${SLURM_CPUS:-32} mem=${SLURM_MEM_MB:-128000} gpus=${SLURM_GPUS:-2}
  mkdir -p /etc/slurm
  local new; new=$(mktemp)
  cat > "$new" <<CONF
# single-node test cluster, written by .ci/slurm/start.sh
ClusterName=local
SlurmctldHost=$H
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
# trust the node's declared CPUs, memory and GPUs (see the header)
SlurmdParameters=config_overrides
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default a job that asks no memory takes the whole node
DefMemPerCPU=1000
# a cancelled or timed-out job gets SIGTERM, then SIGKILL this many seconds later
KillWait=10
# no cgroups without systemd: memory limits are enforced by polling each job's processes
# (every 2 s) and killing a step that outgrows its --mem; sacct then says FAILED and the job's
# log "exceeded memory limit (<used> > <asked>)" (cgroup clusters say OUT_OF_MEMORY instead)
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=2
JobAcctGatherParams=OverMemoryKill
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$H
AccountingStoragePort=6819
# sacct then shows the executor plugin's --comment (the rule) for the tests
AccountingStoreFlags=job_comment
AccountingStorageTRES=gres/gpu
GresTypes=gpu
NodeName=$H CPUs=$cpus RealMemory=$mem Gres=gpu:$gpus State=UNKNOWN
PartitionName=cpu Nodes=$H Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$H Default=NO MaxTime=INFINITE State=UP
CONF
  if ! cmp -s "$new" "$CONF"; then
    log "writing $CONF (node $H, CPUs=$cpus, RealMemory=$mem, gpu:$gpus)"
    mv "$new" "$CONF"; chmod 644 "$CONF"; RESTART=1
    # placeholder files as GPU "devices": slurmd counts them, sbatch accepts gpu requests,
    # nothing is bound (task/none); without File= slurmd reports 0 GPUs and the node is INVAL
    mkdir -p /var/spool/slurmd
    for i in $(seq 0 $((gpus - 1))); do touch "/var/spool/slurmd/fake-gpu$i"; done
    echo "NodeName=$H Name=gpu File=/var/spool/slurmd/fake-gpu[0-$((gpus - 1))]" \
      > /etc/slurm/gres.conf
  else
    rm -f "$new"
  fi
}

start_munge() {
  mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating munge key"
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || /usr/sbin/create-munge-key -f
  fi
  chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge/munge.key
  chmod 755 /run/munge; chmod 600 /etc/munge/munge.key
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged --force
  wait_for 15 munged sh -c 'munge -n | unmunge'
}

start_mariadb() {
  cat > /etc/mysql/mariadb.conf.d/99-slurm.cnf <<'CNF'
[mysqld]
bind-address=127.0.0.1
innodb_buffer_pool_size=128M
innodb_lock_wait_timeout=900
performance_schema=OFF
CNF
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  mysqladmin ping >/dev/null 2>&1 && return 0
  log "starting mariadb"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  # setsid: the daemons must outlive the shell that starts them
  setsid nohup mysqld_safe >/var/log/mysqld_safe.out 2>&1 </dev/null &
  wait_for 60 mariadb mysqladmin ping
}

write_slurmdbd_conf() {  # the database password is kept from an earlier run
  local pw
  pw=$(sed -n 's/^StoragePass=//p' "$DBDCONF" 2>/dev/null || true)
  [ -n "$pw" ] || pw=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20)
  mysql -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pw';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pw';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL
  cat > "$DBDCONF" <<CONF
AuthType=auth/munge
DbdHost=$H
DbdAddr=localhost
SlurmUser=slurm
DebugLevel=info
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=slurm
StoragePass=$pw
StorageLoc=slurm_acct_db
CONF
  chown slurm:slurm "$DBDCONF"; chmod 600 "$DBDCONF"
}

start_slurm() {
  mkdir -p /run/slurm /var/log/slurm /var/spool/slurmctld /var/spool/slurmd
  chown slurm:slurm /run/slurm /var/log/slurm /var/spool/slurmctld
  getent hosts "$H" >/dev/null || { log "adding $H to /etc/hosts"; echo "127.0.0.1 $H" >> /etc/hosts; }
  if [ $RESTART = 1 ]; then
    stop_pidfile /run/slurm/slurmd.pid slurmd
    stop_pidfile /run/slurm/slurmctld.pid slurmctld
    stop_pidfile /run/slurm/slurmdbd.pid slurmdbd
  fi
  if ! pgrep -x slurmdbd >/dev/null; then
    log "starting slurmdbd"; slurmdbd
    wait_for 60 slurmdbd sacctmgr -n list cluster
  fi
  register_accounts
  if ! pgrep -x slurmctld >/dev/null; then
    log "starting slurmctld"; slurmctld
    wait_for 30 slurmctld scontrol ping
  fi
  if ! pgrep -x slurmd >/dev/null; then log "starting slurmd"; slurmd; fi
}

register_accounts() {  # before slurmctld starts, so that it registers with the cluster
  sacctmgr -n list cluster format=cluster | grep -qw local || sacctmgr -i add cluster local
  sacctmgr -n list account format=account | grep -qw default ||
    sacctmgr -i add account default Description=default Organization=local
  sacctmgr -n list assoc user=root account=default format=user | grep -qw root ||
    sacctmgr -i add user root account=default DefaultAccount=default
}

node_up() { sinfo -h -n "$H" -o '%t' | grep -qvE 'down|unk|drain|fail|inval|\*'; }

wait_node() {
  for _ in $(seq 30); do node_up && return 0; sleep 1; done
  log "node $H not up ($(sinfo -h -n "$H" -o '%t' | head -1)); resuming it"
  scontrol update nodename="$H" state=resume 2>/dev/null || true
  wait_for 30 "node $H" node_up
}

install_packages
write_slurm_conf
start_munge
start_mariadb
write_slurmdbd_conf
start_slurm
wait_node
sinfo
sacctmgr -n -P list assoc format=cluster,account,user
log "up"
