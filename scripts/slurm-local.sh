#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for tests and trials:
# munged, slurmctld and slurmd from Debian's `munge` and `slurm-wlm`, with
# every file (configuration, munge key and socket, state, spool, logs, pid
# files) under STATE_DIR and nothing written elsewhere (/etc untouched).
#
#   scripts/slurm-local.sh up   [STATE_DIR]   # start; wait until the node is idle
#   scripts/slurm-local.sh down [STATE_DIR]   # cancel jobs, stop, remove STATE_DIR
#   scripts/slurm-local.sh env  [STATE_DIR]   # the line to paste: export SLURM_CONF=...
#
# STATE_DIR defaults to ${TMPDIR:-/tmp}/slurm-local. Clients (sbatch,
# squeue, sacct, ...) find the cluster through SLURM_CONF=STATE_DIR/slurm.conf,
# which `up` prints. Needs root (slurmd runs each job as its user) and
# `apt-get install slurm-wlm munge`. SLURMCTLD_PORT and SLURMD_PORT (default
# 6817 and 6818) choose the ports. With `slurmdbd` and `mariadb-server`
# installed too, `up` also starts a MariaDB server and slurmdbd under
# STATE_DIR, so that `sacct` works (SLURM_LOCAL_ACCOUNTING=0: not even then).
#
# Process tracking is proctrack/linuxproc and task/none (no cgroups needed);
# a job killed by SLURM gets SIGTERM, then SIGKILL 30 s later (KillWait); a
# requeued job may start again 5 s later (cred_expire).
set -euo pipefail

usage() {
    echo "usage: $0 up|down|env [STATE_DIR]" >&2
    exit 2
}
die() {
    echo "slurm-local: $*" >&2
    exit 1
}

cmd=${1:-}
[[ $cmd == up || $cmd == down || $cmd == env ]] || usage
state=${2:-${TMPDIR:-/tmp}/slurm-local}
if [[ $cmd == down && ! -d $state ]]; then
    echo "slurm-local: no $state: nothing to stop"
    exit 0
fi
mkdir -p "$state"
state=$(cd "$state" && pwd)
conf=$state/slurm.conf
marker=$state/.slurm-local
export SLURM_CONF=$conf

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# TERM the daemon whose pid file is $1, KILL it if it is still there 20 s later.
stop_daemon() {
    local pidfile=$1 pid i
    alive "$pidfile" || return 0
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# Run "$@" until it succeeds, for at most $1 seconds.
wait_for() {
    local seconds=$1 i
    shift
    for ((i = 0; i < seconds * 5; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    return 1
}

node_idle() { [[ $(sinfo -h -N -o %t 2>/dev/null) == idle ]]; }

show_logs() {
    local f
    for f in "$state"/log/*.log; do
        [[ -s $f ]] || continue
        echo "--- $f (last lines)" >&2
        tail -n 15 "$f" >&2
    done
}

down() {
    [[ -e $marker ]] || die "$state: not a cluster made by $0 up (no $marker); left alone"
    if alive "$state/slurmctld.pid"; then
        local jobs
        jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
        if [[ -n ${jobs// /} ]]; then
            # shellcheck disable=SC2086  # one word per job id
            scancel $jobs 2>/dev/null || true
            wait_for 40 bash -c '[[ -z $(squeue -h -o %A) ]]' || echo "slurm-local: jobs still there: $jobs" >&2
        fi
    fi
    stop_daemon "$state/slurmd.pid"
    stop_daemon "$state/slurmctld.pid"
    stop_daemon "$state/slurmdbd.pid"
    stop_daemon "$state/mariadb.pid"
    stop_daemon "$state/munge/munged.pid"
    rm -rf "$state"
    echo "slurm-local: stopped; removed $state"
}

accounting_wanted() {
    [[ ${SLURM_LOCAL_ACCOUNTING:-1} != 0 ]] && command -v slurmdbd >/dev/null &&
        command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null
}

# MariaDB and slurmdbd under $state, so that sacct has a database to read.
start_accounting() {
    local db=$state/mariadb dbport=$1 dbdport=$2
    mkdir -p "$db"
    mariadb-install-db --no-defaults --user=root --datadir="$db/data" \
        --auth-root-authentication-method=normal >"$state/log/mariadb-install.log" 2>&1 ||
        die "mariadb-install-db failed: see $state/log/mariadb-install.log"
    mariadbd --no-defaults --user=root --datadir="$db/data" --socket="$db/mysqld.sock" \
        --port="$dbport" --bind-address=127.0.0.1 --pid-file="$state/mariadb.pid" \
        --log-error="$state/log/mariadb.log" --skip-name-resolve --innodb-buffer-pool-size=32M \
        >/dev/null 2>&1 &
    wait_for 60 mariadb --no-defaults --socket="$db/mysqld.sock" -uroot -e 'select 1' ||
        { show_logs; die "MariaDB did not start"; }
    mariadb --no-defaults --socket="$db/mysqld.sock" -uroot -e \
        "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm-local';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
    cat >"$state/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$state/munge-socket/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbdport
SlurmUser=root
LogFile=$state/log/slurmdbd.log
PidFile=$state/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$dbport
StorageUser=slurm
StoragePass=slurm-local
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$state/slurmdbd.conf"
    # slurmdbd reads slurmdbd.conf beside $SLURM_CONF.
    SLURM_CONF=$conf slurmdbd ||
        { show_logs; die "slurmdbd did not start"; }
    wait_for 60 bash -c "exec 3<>/dev/tcp/127.0.0.1/$dbdport" ||
        { show_logs; die "slurmdbd does not listen on port $dbdport"; }
}

up() {
    [[ $(id -u) == 0 ]] || die "must run as root (slurmd runs each job as its user)"
    local p
    for p in munged slurmctld slurmd sinfo sbatch; do
        command -v "$p" >/dev/null || die "no $p: apt-get install slurm-wlm munge"
    done
    if [[ -e $marker ]]; then
        alive "$state/slurmctld.pid" && die "$state: a cluster is up already ($0 down $state stops it)"
        die "$state: left by an earlier cluster: $0 down $state removes it"
    fi
    [[ -z $(ls -A "$state") ]] || die "$state: not empty; give an empty or new folder"
    : >"$marker"
    mkdir -p "$state/munge" "$state/munge-socket" "$state/log" "$state/spool/ctld" "$state/spool/d"
    # munged wants its key private and its socket's folder open to all.
    chmod 700 "$state/munge"
    chmod 755 "$state/munge-socket"

    local ctld_port=${SLURMCTLD_PORT:-6817} d_port=${SLURMD_PORT:-6818}
    local host node accounting=none dbd_port db_port
    host=$(hostname -s)
    # What slurmd finds on this machine: CPUs, sockets, cores, threads, memory.
    node=$(slurmd -C | head -n 1)
    [[ $node == NodeName=* ]] || die "slurmd -C printed no node line: $node"

    # munge: its own key, socket, pid, seed and log files.
    dd if=/dev/urandom of="$state/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$state/munge/munge.key"
    munged --socket="$state/munge-socket/munge.socket" --key-file="$state/munge/munge.key" \
        --pid-file="$state/munge/munged.pid" --log-file="$state/log/munged.log" \
        --seed-file="$state/munge/munged.seed" ||
        { show_logs; die "munged did not start"; }
    wait_for 20 munge -n -S "$state/munge-socket/munge.socket" || { show_logs; die "munged does not answer"; }

    if accounting_wanted; then
        dbd_port=${SLURMDBD_PORT:-$((ctld_port + 2))}
        db_port=${SLURM_LOCAL_DB_PORT:-$((ctld_port + 3))}
        start_accounting "$db_port" "$dbd_port"
        accounting=slurmdbd
    fi

    cat >"$conf" <<EOF
# Written by scripts/slurm-local.sh: a one-node cluster, state in $state.
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge-socket/munge.socket,cred_expire=5
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait=30
MinJobAge=300
MailProg=/bin/true
JobCompType=jobcomp/filetxt
JobCompLoc=$state/log/jobcomp.log
JobAcctGatherType=jobacct_gather/none
EOF
    if [[ $accounting == slurmdbd ]]; then
        cat >>"$conf" <<EOF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
# The munge socket for talking to slurmdbd (not AuthInfo's, for this one).
AccountingStoragePass=$state/munge-socket/munge.socket
EOF
    else
        echo "AccountingStorageType=accounting_storage/none" >>"$conf"
    fi
    cat >>"$conf" <<EOF
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    if [[ $accounting == slurmdbd ]]; then
        # The cluster must be in the database before slurmctld registers.
        sacctmgr -i add cluster local >/dev/null ||
            { show_logs; die "sacctmgr could not add the cluster"; }
    fi
    slurmctld -f "$conf" || { show_logs; die "slurmctld did not start"; }
    slurmd -f "$conf" || { show_logs; die "slurmd did not start"; }
    wait_for 60 node_idle || {
        sinfo -N >&2 || true
        show_logs
        die "the node did not become idle within 60 s"
    }
    echo "slurm-local: up (node $host idle, accounting: $accounting); state in $state"
    echo "export SLURM_CONF=$conf"
}

case $cmd in
up) up ;;
down) down ;;
env) echo "export SLURM_CONF=$conf" ;;
esac
