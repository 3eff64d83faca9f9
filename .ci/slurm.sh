#!/usr/bin/env bash
# A single-node SLURM cluster for the suite (tests/test_slurm.py, tests/test_dag_smoke.py), started without systemd.
#   .ci/slurm.sh up      install slurm-wlm + munge from apt if missing, write the config, start
#                        munged, slurmctld and slurmd in the background, wait until the node is idle
#   .ci/slurm.sh down    stop every daemon this script started, by the PID it recorded
#   .ci/slurm.sh status  exit 0 when the cluster answers and the node is idle
# Idempotent: `up` on a running cluster only checks it. Needs root (apt-get, /etc/slurm).
# Why these settings: no cgroups in CI containers, so process tracking by /proc
# (proctrack/linuxproc) and no task plugin; no accounting daemon (slurmdbd), so the SLURM
# profile's test asks the executor to query job states with squeue (see profiles/slurm/README.md).
# The config lives at /etc/slurm/slurm.conf because the executor's job step clears SLURM_*
# variables: SLURM_CONF alone makes `srun` fail with "Could not establish a configuration source".
set -euo pipefail

RUN=${ATTRPATCH_SLURM_RUN:-/run/attrpatch-slurm}     # PID files
LOG=${ATTRPATCH_SLURM_LOG:-/var/log/attrpatch-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by attrpatch .ci/slurm.sh"
WAIT_S=${ATTRPATCH_SLURM_WAIT_S:-90}

die() { echo "slurm.sh: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "needs root (apt-get, /etc/slurm, daemons); running as uid $(id -u)"; }

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sinfo >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    command -v apt-get >/dev/null || die "slurmctld/slurmd/munged missing and no apt-get to install slurm-wlm and munge"
    echo "slurm.sh: installing slurm-wlm and munge from apt"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge
}

write_conf() {
    # never overwrite a config this script did not write (a real cluster's)
    if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; refusing to replace it"
    fi
    local host node
    host=$(hostname -s)
    # the node's real CPUs/memory as slurmd sees them (a node line that overstates them is drained)
    node=$(slurmd -C | head -1 | sed -E 's/ UpTime=.*//')
    [[ $node == NodeName=* ]] || die "slurmd -C gave no node line: $node"
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOG" "$RUN"
    cat > "$CONF.tmp" <<EOF
$MARK
ClusterName=attrpatch
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pidfile
SlurmdPidFile=$RUN/slurmd.pidfile
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# finished jobs stay visible to squeue for 5 min: the executor's squeue status query needs
# MinJobAge >= 3 x its first status-check delay, else it falls back to sacct (no accounting here)
MinJobAge=300
SchedulerType=sched/backfill
$node NodeAddr=127.0.0.1 State=UNKNOWN
# two names for the one node, the names profiles/slurm uses for CPU and GPU rules
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host Default=NO MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

start() {   # start NAME CMD...: run in the foreground mode of the daemon, in the background here
    local name=$1; shift
    alive "$name" && return
    "$@" >> "$LOG/$name.out" 2>&1 &
    echo $! > "$RUN/$name.pid"
}

idle() { sinfo -h -N -o '%t' 2>/dev/null | grep -qx 'idle'; }

up() {
    need_root
    local t0=$SECONDS
    install
    write_conf
    mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; }
    chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key; chmod 0700 /etc/munge
    start munged setpriv --reuid=munge --regid=munge --init-groups munged --foreground   # exec: the PID is munged's
    for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munged does not answer (log: $LOG/munged.out)"
    start slurmctld slurmctld -D -i
    start slurmd slurmd -D
    for _ in $(seq "$WAIT_S"); do
        if idle; then
            echo "slurm.sh: node idle after $((SECONDS - t0)) s (config $CONF, logs $LOG)"
            return
        fi
        sleep 1
    done
    sinfo -N -l >&2 || true
    die "node not idle after ${WAIT_S} s; logs in $LOG"
}

down() {
    local name pid
    for name in slurmd slurmctld munged; do
        [ -f "$RUN/$name.pid" ] || continue
        pid=$(cat "$RUN/$name.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
        rm -f "$RUN/$name.pid"
    done
    echo "slurm.sh: stopped"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) idle ;;
    *) die "usage: $0 up|down|status (got '${1:-}')" ;;
esac
