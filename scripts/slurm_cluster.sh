#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for trying hydra/launcher=slurm and for tests/test_slurm.py.
#
#   bash scripts/slurm_cluster.sh start    install slurm-wlm and munge if missing (apt-get), start the daemons
#   bash scripts/slurm_cluster.sh status   the daemons, the node and the line to export SLURM_CONF
#   bash scripts/slurm_cluster.sh env      the export lines alone: eval "$(bash scripts/slurm_cluster.sh env)"
#   bash scripts/slurm_cluster.sh stop     cancel its jobs, stop the daemons by their pid files, remove its folder
#
# Root only. Everything lives in one temporary folder (printed, and recorded in the state file so that `stop`
# finds it): slurm.conf, the munge key, state, spool, logs and pid files. The daemons talk over the loopback
# address; slurmctld, slurmd and MariaDB listen on it alone (slurmdbd 22.05 has no such setting: every address,
# munge-authenticated with the cluster's own key).
# Environment:
#   SLURM_CLUSTER_STATE       the state file (default ${TMPDIR:-/tmp}/slurm_cluster.state)
#   SLURM_CLUSTER_ACCOUNTING  slurmdbd (default: job accounting in a MariaDB, what sacct and submitit read)
#                             or none (no accounting: sacct fails, as on a cluster without slurmdbd)
#   SLURM_CLUSTER_PORT        the first of four consecutive ports to try (default 16817; the next free block is used)
#   SLURM_CLUSTER_TIMEOUT     seconds to wait for each daemon (default 60)
#   SLURM_CLUSTER_KEEP=1      `stop` keeps the folder (logs) instead of removing it
set -euo pipefail

STATE=${SLURM_CLUSTER_STATE:-${TMPDIR:-/tmp}/slurm_cluster.state}
ACCOUNTING=${SLURM_CLUSTER_ACCOUNTING:-slurmdbd}
TIMEOUT=${SLURM_CLUSTER_TIMEOUT:-60}
PARTITION=local
CLUSTER=local

die() { echo "slurm_cluster: $*" >&2; exit 1; }
say() { echo "slurm_cluster: $*"; }

# wait_for SECONDS WHAT COMMAND...: run COMMAND every half second until it succeeds; false after SECONDS.
wait_for() {
    local limit=$1 what=$2 start=$SECONDS
    shift 2
    until "$@" >/dev/null 2>&1; do
        if (( SECONDS - start >= limit )); then
            echo "slurm_cluster: $what not ready after ${limit}s" >&2
            return 1
        fi
        sleep 0.5
    done
}

port_free() { ! timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

pick_ports() {
    local base=${SLURM_CLUSTER_PORT:-16817} tries=0
    while (( tries < 50 )); do
        if port_free "$base" && port_free $((base + 1)) && port_free $((base + 2)) && port_free $((base + 3)); then
            echo "$base"
            return 0
        fi
        base=$((base + 10)); tries=$((tries + 1))
    done
    return 1
}

install_packages() {
    local want=(slurm-wlm munge) missing=0
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null || missing=1
    if [ "$ACCOUNTING" = slurmdbd ]; then
        want+=(slurmdbd mariadb-server)
        command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null \
            || missing=1
    fi
    (( missing )) || return 0
    command -v apt-get >/dev/null || die "no apt-get: install ${want[*]} yourself"
    say "installing ${want[*]} (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null \
        || die "apt-get install ${want[*]} failed"
}

# proc_is PID NAME: PID is running and is NAME (a reused pid is not ours; a zombie is gone)
proc_is() {
    [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# pid_alive PIDFILE NAME: the pid in PIDFILE is running NAME
pid_alive() {
    local pid
    pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] && proc_is "$pid" "$2"
}

stop_pid() {  # PIDFILE NAME
    local pidfile=$1 name=$2 pid start comm tries=0
    pid=$(cat "$pidfile" 2>/dev/null) && [ -n "$pid" ] || return 0
    # a daemon launched a moment ago may still be setsid (or the forked shell) about to exec it
    while comm=$(cat "/proc/$pid/comm" 2>/dev/null) && [[ "$comm" == setsid || "$comm" == bash ]] && (( tries < 50 )); do
        sleep 0.1; tries=$((tries + 1))
    done
    proc_is "$pid" "$name" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    start=$SECONDS
    while proc_is "$pid" "$name" && (( SECONDS - start < 15 )); do sleep 0.2; done
    if proc_is "$pid" "$name"; then
        say "$name (pid $pid) did not stop in 15s; kill -9"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    say "stopped $name (pid $pid)"
}

# launch NAME COMMAND...: start a daemon in the foreground in its own session; its pid goes to run/NAME.pid at once,
# so that `stop` finds it however early a start fails
launch() {
    local name=$1
    shift
    setsid "$@" < /dev/null >> "$DIR/log/$name.out" 2>&1 &
    echo $! > "$DIR/run/$name.pid"
}

show_logs() {
    local f
    for f in "$DIR"/log/*.log; do
        [ -s "$f" ] || continue
        echo "--- $f (last lines)" >&2
        tail -n 15 "$f" >&2
    done
}

# daemons in the order they start; stop goes backwards
DAEMONS=(munged:munged mariadb:mariadbd slurmdbd:slurmdbd slurmctld:slurmctld slurmd:slurmd)

write_state() {
    cat > "$STATE" <<EOF
DIR=$DIR
SLURM_CONF=$DIR/slurm.conf
PARTITION=$PARTITION
NODE=$NODE
ACCOUNTING=$ACCOUNTING
PORT=$PORT
EOF
}

read_state() {
    [ -f "$STATE" ] || return 1
    DIR=$(sed -n 's/^DIR=//p' "$STATE")
    ACCOUNTING=$(sed -n 's/^ACCOUNTING=//p' "$STATE")
    PARTITION=$(sed -n 's/^PARTITION=//p' "$STATE")
    [ -n "$DIR" ]
}

start_mariadb() {
    local dbpass
    mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
        --skip-test-db > "$DIR/log/mariadb-install.log" 2>&1
    launch mariadb mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --socket="$DIR/run/mysql.sock" \
        --pid-file="$DIR/run/mariadb.pid" --bind-address=127.0.0.1 --port=$((PORT + 3)) \
        --log-error="$DIR/log/mariadb.log" --innodb-buffer-pool-size=32M --innodb-lock-wait-timeout=900 \
        --performance-schema=OFF
    wait_for "$TIMEOUT" mariadb mariadb-admin --no-defaults --socket="$DIR/run/mysql.sock" ping || return 1
    dbpass=$(head -c 18 /dev/urandom | base64 | tr -dc A-Za-z0-9)
    mariadb --no-defaults --socket="$DIR/run/mysql.sock" -u root -e "
        CREATE USER 'slurm'@'localhost' IDENTIFIED BY '$dbpass';
        CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$dbpass';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || return 1
    umask 077
    cat > "$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=slurm
StoragePass=$dbpass
StorageLoc=slurm_acct_db
EOF
    umask 022
    launch slurmdbd slurmdbd -D  # reads slurmdbd.conf beside $SLURM_CONF
    wait_for "$TIMEOUT" slurmdbd sacctmgr -n list cluster || return 1
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || return 1
}

write_slurm_conf() {
    local accounting
    if [ "$ACCOUNTING" = slurmdbd ]; then
        accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
AccountingStoragePass=$DIR/run/munge.socket
JobAcctGatherType=jobacct_gather/linux"
    else
        accounting="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
    fi
    cat > "$DIR/slurm.conf" <<EOF
# One node, this machine; written by scripts/slurm_cluster.sh
ClusterName=$CLUSTER
SlurmctldHost=$NODE($ADDR)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/run/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=1
$BIND
$accounting
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=$ADDR CPUs=2 RealMemory=$MEMORY State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

node_idle() { [ "$(sinfo -h -N -n "$NODE" -o %t 2>/dev/null)" = idle ]; }

cmd_start() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (the daemons run as root here)"
    case "$ACCOUNTING" in slurmdbd|none) ;; *) die "SLURM_CLUSTER_ACCOUNTING must be slurmdbd or none";; esac
    if read_state; then
        if pid_alive "$DIR/run/slurmctld.pid" slurmctld; then
            say "already running (state $STATE)"
            cmd_status
            return 0
        fi
        say "state file $STATE left by an earlier start; stopping what is left of it"
        cmd_stop
        ACCOUNTING=${SLURM_CLUSTER_ACCOUNTING:-slurmdbd}
        PARTITION=local
    fi
    install_packages
    NODE=$(hostname -s)
    # the daemons bind the address the host name resolves to when it is a loopback one (127.0.0.1 or Debian's
    # 127.0.1.1); otherwise they listen on every address and are reached over 127.0.0.1
    ADDR=$(getent hosts "$NODE" | awk '{print $1; exit}')
    if [[ "$ADDR" == 127.* ]]; then
        BIND="CommunicationParameters=NoCtldInAddrAny,NoInAddrAny"
    else
        ADDR=127.0.0.1 BIND="# $NODE resolves to no loopback address: the daemons listen on every address"
    fi
    PORT=$(pick_ports) || die "no four free ports from ${SLURM_CLUSTER_PORT:-16817} on"
    # memory: what slurmd measures, less a little, so that --mem requests up to it are accepted
    MEMORY=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/slurm_cluster.XXXXXX")
    chmod 755 "$DIR"
    mkdir -p "$DIR"/{state,spool,log,run}
    write_state  # from here on `stop` finds whatever was started
    say "folder $DIR"
    trap 'echo "slurm_cluster: start failed; stopping what was started" >&2; show_logs; cmd_stop >&2' ERR
    set -E

    head -c 1024 /dev/urandom > "$DIR/munge.key"
    chmod 400 "$DIR/munge.key"
    launch munged munged --foreground --key-file="$DIR/munge.key" --socket="$DIR/run/munge.socket" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/run/munge.seed"
    wait_for "$TIMEOUT" munged test -S "$DIR/run/munge.socket"

    export SLURM_CONF=$DIR/slurm.conf
    write_slurm_conf
    if [ "$ACCOUNTING" = slurmdbd ]; then start_mariadb; fi
    launch slurmctld slurmctld -D
    wait_for "$TIMEOUT" slurmctld scontrol ping
    launch slurmd slurmd -D
    wait_for "$TIMEOUT" "node $NODE (idle in sinfo)" node_idle
    trap - ERR
    say "up: node $NODE idle, partition $PARTITION, accounting $ACCOUNTING, ports $PORT-$((PORT + 3)) on $ADDR"
    say "state file $STATE"
    echo "export SLURM_CONF=$DIR/slurm.conf"
}

cmd_stop() {
    local entry jobs start
    if ! read_state; then
        say "nothing to stop (no state file $STATE)"
        return 0
    fi
    export SLURM_CONF=$DIR/slurm.conf
    if pid_alive "$DIR/run/slurmctld.pid" slurmctld; then  # jobs first, while the daemons can still end them
        scancel --quiet --partition="$PARTITION" 2>/dev/null || true
        start=$SECONDS
        while jobs=$(squeue -h -o %i 2>/dev/null) && [ -n "$jobs" ] && (( SECONDS - start < 20 )); do sleep 0.5; done
        [ -z "${jobs:-}" ] || say "jobs still listed after 20s: ${jobs//$'\n'/ }"
    fi
    for (( i = ${#DAEMONS[@]} - 1; i >= 0; i-- )); do
        entry=${DAEMONS[$i]}
        stop_pid "$DIR/run/${entry%%:*}.pid" "${entry##*:}"
    done
    # job steps left behind by a killed slurmd: slurmstepd processes started with this cluster's config
    for proc in /proc/[0-9]*; do
        [ "$(cat "$proc/comm" 2>/dev/null)" = slurmstepd ] || continue
        if tr '\0' '\n' < "$proc/environ" 2>/dev/null | grep -qx "SLURM_CONF=$DIR/slurm.conf"; then
            say "killing left-over slurmstepd (pid ${proc#/proc/})"
            kill -KILL "${proc#/proc/}" 2>/dev/null || true
        fi
    done
    if [ "${SLURM_CLUSTER_KEEP:-0}" = 1 ]; then
        say "kept $DIR"
    elif [ -d "$DIR" ] && [[ "$(basename "$DIR")" == slurm_cluster.* ]]; then
        rm -rf -- "$DIR"
        say "removed $DIR"
    fi
    rm -f -- "$STATE"
}

cmd_status() {
    local entry up=0 down=0
    read_state || { say "not running (no state file $STATE)"; return 1; }
    say "folder $DIR (state $STATE)"
    for entry in "${DAEMONS[@]}"; do
        if pid_alive "$DIR/run/${entry%%:*}.pid" "${entry##*:}"; then
            say "  ${entry%%:*}: running (pid $(cat "$DIR/run/${entry%%:*}.pid"))"; up=$((up + 1))
        elif [ "$ACCOUNTING" = slurmdbd ] || [[ "$entry" != mariadb:* && "$entry" != slurmdbd:* ]]; then
            say "  ${entry%%:*}: not running"; down=$((down + 1))
        fi
    done
    if (( up )); then SLURM_CONF=$DIR/slurm.conf sinfo -N -o "%N %P %t %c %m" 2>/dev/null || true; fi
    echo "export SLURM_CONF=$DIR/slurm.conf"
    (( down == 0 ))
}

cmd_env() {
    read_state || die "not running (no state file $STATE); run: bash scripts/slurm_cluster.sh start"
    echo "export SLURM_CONF=$DIR/slurm.conf"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) echo "usage: bash scripts/slurm_cluster.sh start|stop|status|env" >&2; exit 2 ;;
esac
