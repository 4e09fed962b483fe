#!/usr/bin/env bash
# A real Slurm cluster on this machine for hpc_ft's tests and for trying executor=slurm:
# Debian's slurm-wlm (slurmctld, N x slurmd on loopback, slurmdbd + a private MariaDB for sacct),
# fake GPUs declared as GRES, requeue allowed. Runs as root; no systemd needed.
#
#   bash scripts/local-slurm.sh up      # install what is missing, start, wait until the nodes are idle
#   bash scripts/local-slurm.sh status  # daemons, nodes, and the SLURM_CONF line for other shells
#   bash scripts/local-slurm.sh install # only install the packages (Slurm, munge, MariaDB, shellcheck)
#   bash scripts/local-slurm.sh down    # stop exactly the daemons `up` started, undo its /etc edits
#
# Environment (all optional):
#   HPC_FT_SLURM_DIR     config, state and logs (default /tmp/hpc_ft-slurm)
#   HPC_FT_SLURM_NODES   slurmd daemons, one node each (default 2): node01, node02, ...
#   HPC_FT_SLURM_CPUS    CPUs each node advertises (default 4; may exceed the real cores)
#   HPC_FT_SLURM_MEM_MB  memory each node advertises (default 16384)
#   HPC_FT_SLURM_GPUS    fake GPUs per node, GRES gpu:testgpu:N (default 2)
#   HPC_FT_SLURM_WAIT_S  how long `up` waits for idle nodes (default 120)
#   HPC_FT_SLURM_KEEP=1  `down` keeps the directory (logs) instead of deleting it
set -euo pipefail

DIR=$(realpath -m "${HPC_FT_SLURM_DIR:-/tmp/hpc_ft-slurm}")
NODES=${HPC_FT_SLURM_NODES:-2}
CPUS=${HPC_FT_SLURM_CPUS:-4}
MEM_MB=${HPC_FT_SLURM_MEM_MB:-16384}
GPUS=${HPC_FT_SLURM_GPUS:-2}
GPU_TYPE=testgpu
WAIT_S=${HPC_FT_SLURM_WAIT_S:-120}
# Own ports, so this cluster never talks to another Slurm's daemons on the default 6817-6819.
CTLD_PORT=6917
DBD_PORT=6919
SLURMD_PORT0=6930
DB_PORT=3317
CONF=$DIR/etc/slurm.conf
STATE=$DIR/run/started   # "pid name" per daemon this script started; `down` stops exactly these
HOSTS_TAG="hpc_ft-local-slurm"
T0=$SECONDS

say() { echo "[local-slurm +$((SECONDS - T0))s] $*"; }
die() { echo "local-slurm: $*" >&2; exit 1; }
node_name() { printf 'node%02d' "$1"; }

install_packages() {
  # Two callers at once (pytest -n 2: one worker's Slurm, the other's shellcheck) would both run apt-get, and the
  # second fail on dpkg's lock: the second waits here, then finds everything installed.
  if command -v flock >/dev/null; then
    (flock -w 900 9 || die "another install held /tmp/hpc_ft-local-slurm-install.lock for 15 min"
     install_missing_packages) 9>/tmp/hpc_ft-local-slurm-install.lock
  else
    install_missing_packages
  fi
}

install_missing_packages() {
  local pkgs=()
  command -v slurmctld >/dev/null || pkgs+=(slurmctld)
  command -v slurmd >/dev/null || pkgs+=(slurmd)
  command -v sbatch >/dev/null || pkgs+=(slurm-client)
  command -v munged >/dev/null || pkgs+=(munge)
  command -v slurmdbd >/dev/null || pkgs+=(slurmdbd)
  command -v mariadbd >/dev/null || pkgs+=(mariadb-server)
  command -v shellcheck >/dev/null || pkgs+=(shellcheck)
  command -v unshare >/dev/null || pkgs+=(util-linux)
  ((${#pkgs[@]})) || return 0
  command -v apt-get >/dev/null || die "missing ${pkgs[*]} and no apt-get: install Slurm, munge, MariaDB yourself"
  [[ $(id -u) == 0 ]] || die "missing ${pkgs[*]} and not root: install them or run as root"
  say "apt-get install ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null || die "apt-get update failed"
  # No systemd here: the packages' own service starts are refused, which is what we want.
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" </dev/null >/tmp/hpc_ft-slurm-apt.log 2>&1 \
    || { tail -n 30 /tmp/hpc_ft-slurm-apt.log >&2; die "apt-get install failed"; }
}

alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# Record a daemon we started; $2 is its pid file (daemons write it after forking).
record() {
  local name=$1 pidfile=$2 i
  for ((i = 0; i < 100; i++)); do [[ -s $pidfile ]] && break; sleep 0.1; done
  [[ -s $pidfile ]] || die "$name did not write $pidfile; see $DIR/log"
  echo "$(cat "$pidfile") $name" >>"$STATE"
}

write_config() {
  local head i names
  head=$(hostname -s)  # slurmctld insists that SlurmctldHost is its own host name
  names="node[$(printf '%02d-%02d' 1 "$NODES")]"
  mkdir -p "$DIR"/{etc,log,run,state,spool,dev}
  for ((i = 0; i < GPUS; i++)); do ln -sfn /dev/null "$DIR/dev/gpu$i"; done
  # slurmd wants a character device per GPU; /dev/null behind a symlink is one.
  if ((GPUS > 0)); then
    echo "NodeName=$names Name=gpu Type=$GPU_TYPE File=$DIR/dev/gpu[0-$((GPUS - 1))]" >"$DIR/etc/gres.conf"
  else
    : >"$DIR/etc/gres.conf"
  fi
  {
    echo "# hpc_ft local test cluster, written by scripts/local-slurm.sh. Not for production."
    echo "ClusterName=hpcftlocal"
    echo "SlurmctldHost=$head(127.0.0.1)"
    echo "SlurmctldPort=$CTLD_PORT"
    echo "SlurmUser=root"
    echo "AuthType=auth/munge"
    echo "CredType=cred/munge"
    # A requeued job is held cred_expire seconds before it may start again (default 120).
    echo "AuthInfo=cred_expire=10"
    echo "MpiDefault=none"
    echo "MailProg=/bin/true"  # the default /usr/bin/mail is not installed
    echo "CommunicationParameters=NoInAddrAny"
    echo "StateSaveLocation=$DIR/state"
    echo "SlurmdSpoolDir=$DIR/spool/%n"
    echo "SlurmctldPidFile=$DIR/run/slurmctld.pid"
    echo "SlurmdPidFile=$DIR/run/slurmd-%n.pid"
    echo "SlurmctldLogFile=$DIR/log/slurmctld.log"
    echo "SlurmdLogFile=$DIR/log/slurmd-%n.log"
    # No cgroups in a container: track job processes by parentage.
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "SchedulerType=sched/backfill"
    echo "SchedulerParameters=sched_interval=2,bf_interval=2"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_Core_Memory"
    echo "DefMemPerCPU=256"  # a job without --mem must not take a whole node's memory
    # Nodes may advertise more CPUs and memory than the machine has, so test jobs run side by side.
    echo "SlurmdParameters=config_overrides"
    echo "ReturnToService=2"
    echo "JobRequeue=1"
    echo "KillWait=5"
    echo "MinJobAge=600"
    echo "MessageTimeout=10"
    echo "InactiveLimit=0"
    echo "AccountingStorageType=accounting_storage/slurmdbd"
    echo "AccountingStorageHost=127.0.0.1"
    echo "AccountingStoragePort=$DBD_PORT"
    echo "AccountingStorageTRES=gres/gpu"
    echo "JobAcctGatherType=jobacct_gather/linux"
    echo "JobCompType=jobcomp/filetxt"
    echo "JobCompLoc=$DIR/log/jobcomp.txt"
    ((GPUS > 0)) && echo "GresTypes=gpu"
    for ((i = 1; i <= NODES; i++)); do
      local gres=""
      ((GPUS > 0)) && gres="Gres=gpu:$GPU_TYPE:$GPUS"
      echo "NodeName=$(node_name "$i") NodeHostname=$(node_name "$i") NodeAddr=127.0.0.1" \
        "Port=$((SLURMD_PORT0 + i)) CPUs=$CPUS RealMemory=$MEM_MB $gres State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=1-00:00:00 State=UP"
    # A small partition so preflight can be tested against real limits.
    echo "PartitionName=short Nodes=$(node_name 1) MaxTime=10 MaxNodes=1 State=UP"
  } >"$CONF"
  cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=$head
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=local-test-only
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf"  # slurmdbd refuses a readable one
}

# Node names must resolve (the rendezvous host is the first node): tagged loopback lines.
add_hosts() {
  local i
  for ((i = 1; i <= NODES; i++)); do
    grep -q "^127.0.0.1 $(node_name "$i") # $HOSTS_TAG\$" /etc/hosts ||
      echo "127.0.0.1 $(node_name "$i") # $HOSTS_TAG" >>/etc/hosts
  done
}

# Clients read /etc/slurm/slurm.conf unless SLURM_CONF is set; link ours there if nothing else is.
link_conf() {
  mkdir -p /etc/slurm
  if [[ -L /etc/slurm/slurm.conf || ! -e /etc/slurm/slurm.conf ]]; then
    ln -sfn "$CONF" /etc/slurm/slurm.conf
    echo "/etc/slurm/slurm.conf" >"$DIR/run/linked"
  else
    say "/etc/slurm/slurm.conf belongs to another cluster: left alone; export SLURM_CONF=$CONF"
  fi
}

start_munge() {
  if alive "$(cat /run/munge/munged.pid 2>/dev/null || true)"; then
    say "munged already running: reused, and left running by down"
  else
    [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged
    record munged /run/munge/munged.pid
  fi
  munge -n </dev/null | unmunge >/dev/null
}

start_accounting() {
  local i
  mariadb-install-db --no-defaults --user=root --datadir="$DIR/db" --skip-test-db \
    --auth-root-authentication-method=socket >"$DIR/log/mariadb-install.log" 2>&1
  # mariadbd does not daemonize: detach it ourselves.
  setsid nohup mariadbd --no-defaults --user=root --datadir="$DIR/db" --socket="$DIR/run/mysqld.sock" \
    --pid-file="$DIR/run/mariadbd.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
    --log-error="$DIR/log/mariadb.err" --innodb-buffer-pool-size=32M --innodb-fast-shutdown=2 \
    </dev/null >/dev/null 2>&1 &
  record mariadbd "$DIR/run/mariadbd.pid"
  for ((i = 0; i < 300; i++)); do [[ -S $DIR/run/mysqld.sock ]] && break; sleep 0.1; done
  [[ -S $DIR/run/mysqld.sock ]] || { tail "$DIR/log/mariadb.err" >&2; die "mariadbd did not start"; }
  mariadb --no-defaults -S "$DIR/run/mysqld.sock" -u root -e \
    "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'local-test-only';
     GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  # slurmdbd has no -f: it reads slurmdbd.conf beside $SLURM_CONF.
  SLURM_CONF=$CONF slurmdbd
  record slurmdbd "$DIR/run/slurmdbd.pid"
  for ((i = 0; i < 300; i++)); do
    grep -q 'slurmdbd version .* started' "$DIR/log/slurmdbd.log" 2>/dev/null && return 0
    sleep 0.1
  done
  tail "$DIR/log/slurmdbd.log" >&2
  die "slurmdbd did not start"
}

start_slurm() {
  local i name
  slurmctld -f "$CONF"
  record slurmctld "$DIR/run/slurmctld.pid"
  for ((i = 1; i <= NODES; i++)); do
    name=$(node_name "$i")
    mkdir -p "$DIR/spool/$name"
    # Own UTS namespace: `hostname` in a job prints the node's name, as on a real cluster.
    # The absolute -f path matters: slurmstepd re-reads the config by it.
    # shellcheck disable=SC2016  # expanded by the inner sh, from its arguments
    unshare --uts sh -c 'hostname "$1" && exec slurmd -N "$1" -f "$2"' sh "$name" "$CONF"
    record slurmd "$DIR/run/slurmd-$name.pid"
  done
}

idle_nodes() { sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l; }

wait_idle() {
  local deadline=$((SECONDS + WAIT_S))
  while ((SECONDS < deadline)); do
    (($(idle_nodes) >= NODES)) && return 0
    sleep 0.5
  done
  sinfo -N -l >&2 || true
  tail -n 20 "$DIR"/log/*.log >&2 || true
  die "only $(idle_nodes) of $NODES nodes idle after ${WAIT_S}s"
}

# Every daemon recorded in the state file is still the process we started.
all_alive() {
  local pid name
  [[ -s $STATE ]] || return 1
  while read -r pid name; do ours "$pid" "$name" || return 1; done <"$STATE"
}

cmd_up() {
  # A step whose own output goes to a log (mariadb-install-db, the daemons) would otherwise fail in silence.
  # shellcheck disable=SC2154  # rc is assigned inside the trap
  trap 'rc=$?; ((rc == 0)) || echo "local-slurm: up failed (exit $rc) at: $BASH_COMMAND (logs: $DIR/log)" >&2' EXIT
  export SLURM_CONF=$CONF
  if all_alive && (($(idle_nodes) >= NODES)); then
    say "already up ($NODES nodes idle); config $CONF"
    return 0
  fi
  [[ -e $STATE ]] && { say "a previous cluster is half up: stopping it first"; cmd_down; }
  [[ $(id -u) == 0 ]] || die "run as root: the daemons need it"
  mkdir -p "$(dirname "$DIR")"
  install_packages
  rm -rf "$DIR"
  write_config
  : >"$STATE"
  add_hosts
  link_conf
  start_munge
  start_accounting
  start_slurm
  wait_idle
  say "up: $(slurmd -V), $NODES nodes, config $CONF"
  sinfo -N -o '%N %P %t %c %m %G'
}

# The recorded pid still runs the program we started (pids get reused).
ours() { [[ $(cat "/proc/$1/comm" 2>/dev/null) == "$2" ]]; }

# SIGTERM every recorded daemon at once (they have no order to respect on shutdown), SIGKILL after 10 s.
stop_recorded() {
  local pid name i left
  while read -r pid name; do
    if ours "$pid" "$name"; then kill "$pid" 2>/dev/null || true; fi
  done <"$STATE"
  for ((i = 0; i < 100; i++)); do
    left=0
    while read -r pid name; do ours "$pid" "$name" && left=1; done <"$STATE"
    ((left)) || break
    sleep 0.1
  done
  while read -r pid name; do
    if ours "$pid" "$name"; then kill -9 "$pid" 2>/dev/null || true; say "killed $name ($pid) after 10 s"
    else say "stopped $name ($pid)"; fi
  done <"$STATE"
}

cmd_down() {
  local pid name jobs i
  export SLURM_CONF=$CONF
  if [[ ! -d $DIR ]]; then say "nothing to stop: $DIR does not exist"; return 0; fi
  if [[ -s $STATE ]] && all_alive; then
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ' || true)
    if [[ -n ${jobs// /} ]]; then
      # shellcheck disable=SC2086  # one argument per job id
      scancel $jobs 2>/dev/null || true
      for ((i = 0; i < 60; i++)); do [[ -z $(squeue -h 2>/dev/null) ]] && break; sleep 0.5; done
    fi
  fi
  [[ -s $STATE ]] && stop_recorded
  # Job steps of a cancelled job can outlive slurmd; stop those that hold our files open, by pid.
  for pid in /proc/[0-9]*; do
    pid=${pid#/proc/}
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == slurmstepd ]] || continue
    if find "/proc/$pid/fd" -lname "$DIR/*" 2>/dev/null | grep -q .; then kill -9 "$pid" 2>/dev/null || true; fi
  done
  if [[ -s $DIR/run/linked && $(readlink /etc/slurm/slurm.conf 2>/dev/null) == "$CONF" ]]; then
    rm -f /etc/slurm/slurm.conf
  fi
  if grep -q "# $HOSTS_TAG\$" /etc/hosts; then
    # /etc/hosts may be a bind mount: rewrite it in place rather than replace it.
    local kept
    kept=$(grep -v "# $HOSTS_TAG\$" /etc/hosts || true)
    printf '%s\n' "$kept" >/etc/hosts
  fi
  rm -f "$STATE"
  if [[ ${HPC_FT_SLURM_KEEP:-0} == 1 ]]; then say "down; kept $DIR"; else rm -rf "$DIR"; say "down"; fi
}

cmd_status() {
  export SLURM_CONF=$CONF
  if all_alive; then
    echo "up: config $CONF (other shells: export SLURM_CONF=$CONF)"
    while read -r pid name; do echo "  $name $pid"; done <"$STATE"
    sinfo -N -o '%N %P %t %c %m %G'
  else
    echo "down"
    return 3
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  install) install_packages ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status|install" >&2; exit 2 ;;
esac
