#!/usr/bin/env bash
# Starts a one-node Slurm cluster on 127.0.0.1 for the tests that submit jobs to Slurm.
# Run as root on Debian 12. Running it again leaves a healthy cluster as it is.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "start-cluster.sh: must run as root" >&2
    exit 1
fi

node=$(hostname -s)
conf_dir=/etc/slurm
log_dir=/var/log/slurm
state_dir=/var/spool/slurmctld
spool_dir=/var/spool/slurmd

# --- Packages -----------------------------------------------------------------------------

missing=0
for cmd in sbatch slurmctld slurmd munged; do
    command -v "$cmd" >/dev/null 2>&1 || missing=1
done
if ((missing)); then
    # The packages' maintainer scripts would start the daemons (through systemd where it runs)
    # before this script has written a configuration; a policy-rc.d that denies starts keeps
    # them down so that this script alone decides how they run. An existing one is left as is.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge
    if ((own_policy)); then
        rm -f "$policy"
    fi
fi

# --- Configuration ------------------------------------------------------------------------

# Slurm drains a node whose RealMemory exceeds what slurmd finds, so declare a little less
# than the machine has (in MiB); jobs' --mem is checked against it.
mem_mib=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
real_memory=$((mem_mib * 9 / 10))
((real_memory > 0)) || real_memory=1

mkdir -p "$conf_dir" "$log_dir" "$state_dir" "$spool_dir"

conf=$(
    cat <<EOF
# Written by tests/slurm/start-cluster.sh; rewritten on each run.
ClusterName=monoscope-test
# Name and address are given together so that nothing depends on DNS and all traffic stays on
# the loopback interface.
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=${state_dir}
SlurmdSpoolDir=${spool_dir}
# Where the packages' systemd units expect them, for a machine that has systemd.
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${log_dir}/slurmctld.log
SlurmdLogFile=${log_dir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No systemd and possibly no usable cgroup hierarchy: track processes through /proc and bind
# no tasks, which needs neither.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd: job states are read back with scontrol while the controller keeps the records.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
# No mail is ever sent; a missing mailer only fills the log with errors.
MailProg=/bin/true
SwitchType=switch/none
# Finished jobs stay visible to "scontrol show job" for an hour, long enough for any test to
# read their final state and exit code.
MinJobAge=3600
# Schedule single CPUs, so two one-CPU jobs (or array tasks) run side by side; memory is not
# a consumable resource, so --mem only has to fit RealMemory.
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# A node that restarts comes back to service by itself, and a machine with fewer CPUs or less
# memory than declared still runs jobs rather than being drained.
ReturnToService=2
SlurmdParameters=config_overrides
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=${node} NodeAddr=127.0.0.1 CPUs=2 RealMemory=${real_memory} State=UNKNOWN
PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP
EOF
)

conf_changed=0
if [[ ! -f $conf_dir/slurm.conf ]] || [[ $(<"$conf_dir/slurm.conf") != "$conf" ]]; then
    printf '%s\n' "$conf" >"$conf_dir/slurm.conf"
    conf_changed=1
fi

# --- Daemons ------------------------------------------------------------------------------

# Pids of the live processes with this exact command name. The /proc scan, rather than the pid
# files, also finds daemons that another configuration or systemd started; zombies are left out
# because the daemons are orphans and an init that is not a real one (as in some containers and
# VMs) may reap them late.
daemon_pids() {
    local name=$1 f stat comm state pid
    for f in /proc/[0-9]*/stat; do
        stat=$(cat "$f" 2>/dev/null) || continue
        comm=${stat#*(}
        comm=${comm%)*}
        [[ $comm == "$name" ]] || continue
        state=${stat##*) }
        state=${state%% *}
        [[ $state == Z || $state == X ]] && continue
        pid=${f#/proc/}
        echo "${pid%/stat}"
    done
}

running() {
    [[ -n $(daemon_pids "$1") ]]
}

# Stops a daemon and waits until it has exited, so that its port is free for the next one.
stop() {
    local name=$1 pids i
    pids=$(daemon_pids "$name")
    [[ -n $pids ]] || return 0
    # shellcheck disable=SC2086 # one pid a word
    kill $pids 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        running "$name" || return 0
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
}

# munged reads its key as the munge user; the package creates the key only on some versions,
# and /run/munge disappears at each boot.
munge_key=/etc/munge/munge.key
if [[ ! -s $munge_key ]]; then
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile="$munge_key"
    else
        dd if=/dev/urandom of="$munge_key" bs=1024 count=1 status=none
    fi
fi
chown munge:munge "$munge_key"
chmod 400 "$munge_key"
install -d -o munge -g munge -m 755 /run/munge
munge_pidfile=/run/munge/munged.pid

# The daemons fork into the background; their early errors go to a file rather than to this
# script's stdout and stderr, which a caller reading them through a pipe would otherwise see
# held open until the daemons exit.
start_log=$log_dir/start.log

dump_logs() {
    local f
    for f in "$start_log" "$log_dir/slurmctld.log" "$log_dir/slurmd.log" /var/log/munge/munged.log; do
        echo "===== $f (last 50 lines)" >&2
        tail -n 50 "$f" >&2 2>/dev/null || echo "(missing)" >&2
    done
}

start_daemon() {
    if ! "$@" </dev/null >>"$start_log" 2>&1; then
        echo "start-cluster.sh: '$*' failed" >&2
        dump_logs
        exit 1
    fi
}

if running munged; then
    echo "munged already running"
else
    start_daemon runuser -u munge -- /usr/sbin/munged --pid-file="$munge_pidfile"
fi

if ((conf_changed)); then
    # The node and partition definitions are read only at startup.
    stop slurmd
    stop slurmctld
fi
if running slurmctld; then
    echo "slurmctld already running"
else
    start_daemon slurmctld
fi
if running slurmd; then
    echo "slurmd already running"
else
    start_daemon slurmd -N "$node"
fi

# --- Wait for the node --------------------------------------------------------------------

deadline=$((SECONDS + 60))
resumed=0
while :; do
    state=$(sinfo -h -n "$node" -o %T 2>/dev/null | head -n 1 || true)
    case $state in
        # Jobs may be running when the script runs again; the node is up all the same.
        # A restarted slurmctld reports the node's saved state before slurmd has registered, so
        # the daemons must also still be alive (a bad configuration makes them exit soon after
        # forking).
        idle | mixed | allocated | completing)
            if running slurmctld && running slurmd; then
                echo "slurm node $node is up ($state)"
                exit 0
            fi
            ;;
        # A node left down or drained by an earlier run (e.g. after a kill -9) does not come back
        # by itself; resume it once slurmd responds (a trailing * means it does not yet).
        down | drain | drained | draining)
            if ((!resumed)); then
                scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 && resumed=1
            fi
            ;;
    esac
    if ((SECONDS >= deadline)); then
        echo "start-cluster.sh: node $node not idle after 60 s (state: ${state:-none})" >&2
        sinfo -N -l >&2 || true
        dump_logs
        exit 1
    fi
    sleep 1
done
