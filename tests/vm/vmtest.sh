#!/bin/sh
# The in-VM half of the cgroup v2 test (busybox sh, run by /init on a pure cgroup v2 kernel).
#
# Lays out a node as the kubelet (systemd cgroup driver) and containerd do, puts real processes in it (a CPU
# burner under cpu.max, processes holding known anonymous memory, page cache read from a RAM block device, a
# container pushed into swap, an OOM kill), runs `nodemeter agent` on the real /sys/fs/cgroup, scrapes it with
# wget and checks what it serves against the kernel's own files. Prints "VMTEST PASS <check>" or
# "VMTEST FAIL <check>: <why>" per check; exits with the number of failed checks (capped at 100).
# Kernel command line switches: nodemeter.capture=1 also prints the v2 files of the root, one pod and its
# containers between "VMCAPTURE BEGIN <snapshot>/<path>" and "VMCAPTURE END <snapshot>/<path>" lines.

CG=/sys/fs/cgroup
AGENT=127.0.0.1:10261
NODE=vmnode
STATE=/run/containerd/io.containerd.runtime.v2.task/k8s.io
QUOTA_CORES=0.5
failures=0

pass() { echo "VMTEST PASS $*"; }
fail() {
  echo "VMTEST FAIL $*"
  failures=$((failures + 1))
}
info() { echo "VMTEST INFO $*"; }
phase() { echo "VMTEST INFO at $(cut -d' ' -f1 /proc/uptime) s: $*"; }

# ---------------------------------------------------------------------------------------------- helpers
uptime_s() { cut -d' ' -f1 /proc/uptime; }
# kv FILE KEY: the value of KEY in a flat key/value file (cpu.stat, memory.stat, memory.events).
kv() { awk -v k="$2" '$1 == k { print $2; found = 1 } END { if (!found) exit 1 }' "$1"; }
# psi_total FILE some|full: cumulative stall time in microseconds.
psi_total() { awk -v k="$2" '$1 == k { for (i = 2; i <= NF; i++) if ($i ~ /^total=/) print substr($i, 7) }' "$1"; }
# calc EXPR: floating point arithmetic.
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
# holds EXPR: exit 0 when the awk condition is true.
holds() { awk "BEGIN { exit !($1) }"; }
# working_set DIR: memory.current - inactive_file, floored at 0 (DESIGN.md).
working_set() {
  awk -v cur="$(cat "$1/memory.current")" -v inact="$(kv "$1/memory.stat" inactive_file)" \
    'BEGIN { ws = cur - inact; if (ws < 0) ws = 0; printf "%.0f", ws }'
}
id_of() { printf '%s' "$1" | sha256sum | cut -c1-64; }

# run_in CGROUP CMD...: starts CMD in the background already inside CGROUP, so that every page it
# touches is charged there (cgroup v2 does not move charges with a migrated process).
run_in() {
  cg=$1
  shift
  sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cg" "$@" &
}

# scrape PATH FILE: GET http://AGENT/PATH into FILE; response headers into FILE.hdr.
# (timeout, not wget -T: busybox 1.35 wget -T crashes on a refused connection)
scrape() { timeout 10 wget -q -S -O "$2" "http://$AGENT$1" 2>"$2.hdr"; }
# series FILE NAME LABELS: "value [timestamp]" of the sample NAME{LABELS} (LABELS as printed, braces excluded;
# empty for a family without labels).
series() {
  awk -v want="$2" -v labels="$3" '
    /^#/ { next }
    {
      key = $1
      if (labels == "") { if (key == want) { print $2, $3; exit } ; next }
      if (key == want "{" labels "}") { print $2, $3; exit }
    }' "$1"
}
value_of() { series "$@" | cut -d' ' -f1; }
ts_of() { series "$@" | cut -d' ' -f2; }
has_family() { grep -q "^$2[{ ]" "$1"; }
ctr_labels() { echo "container=\"$1\",namespace=\"$2\",pod=\"$3\""; }

# json_paths FILE: a JSON document as "path<TAB>scalar" lines (paths such as items.0.containers.1.usage.cpu),
# whatever order the keys come in.
json_paths() {
  awk '
    # JSON -> "path<TAB>scalar" lines (paths like items.0.containers.1.usage.cpu).
    function path(   i, p) { p = ""; for (i = 1; i <= d; i++) p = p (i > 1 ? "." : "") key[i]; return p }
    function value(v) { print path() "\t" v; if (d > 0 && type[d] == "o") expect_key = 1 }
    { doc = doc $0 "\n" }
    END {
      n = length(doc); d = 0; expect_key = 0
      for (i = 1; i <= n; i++) {
        c = substr(doc, i, 1)
        if (index(" \t\r\n", c) > 0) continue
        if (c == "{") { d++; type[d] = "o"; key[d] = ""; expect_key = 1; continue }
        if (c == "[") { d++; type[d] = "a"; key[d] = 0; expect_key = 0; continue }
        if (c == "}" || c == "]") { d--; expect_key = (d > 0 && type[d] == "o"); continue }
        if (c == ":") { expect_key = 0; continue }
        if (c == ",") { if (type[d] == "a") key[d]++; else expect_key = 1; continue }
        if (c == "\"") {
          s = ""
          for (i++; i <= n; i++) {
            c = substr(doc, i, 1)
            if (c == "\\") { i++; s = s substr(doc, i, 1); continue }
            if (c == "\"") break
            s = s c
          }
          if (type[d] == "o" && expect_key) { key[d] = s; expect_key = 0 } else value(s)
          continue
        }
        s = c
        while (i < n && index(",}] \t\r\n", substr(doc, i + 1, 1)) == 0) { i++; s = s substr(doc, i, 1) }
        value(s)
      }
    }
  ' "$1"
}
# flatten_metrics FILE: one line per value of a PodMetrics(List) or NodeMetrics JSON document:
#   "<object name> <container name|-> cpu|memory|swap|window <value>", and "- - kind <kind>".
flatten_metrics() {
  json_paths "$1" | awk -F '\t' '
    {
      p = $1; v = $2
      if (p == "kind") { print "-", "-", "kind", v; next }
      item = ""; rest = p
      if (match(p, /^items\.[0-9]+\./)) { item = substr(p, 1, RLENGTH); rest = substr(p, RLENGTH + 1) }
      items[item] = 1
      if (rest == "metadata.name") { name[item] = v; next }
      if (rest == "window") { n++; obj[n] = item; ctr[n] = ""; what[n] = "window"; val[n] = v; next }
      if (rest ~ /^usage\.(cpu|memory|swap)$/) { n++; obj[n] = item; ctr[n] = ""; what[n] = substr(rest, 7); val[n] = v; next }
      if (match(rest, /^containers\.[0-9]+\./)) {
        c = item substr(rest, 1, RLENGTH); field = substr(rest, RLENGTH + 1)
        if (field == "name") { cname[c] = v; next }
        if (field ~ /^usage\.(cpu|memory|swap)$/) { n++; obj[n] = item; ctr[n] = c; what[n] = substr(field, 7); val[n] = v }
      }
    }
    END {
      for (i = 1; i <= n; i++) print name[obj[i]], (ctr[i] == "" ? "-" : cname[ctr[i]]), what[i], val[i]
    }'
}
# quantity Q: a Kubernetes quantity in base units (cores or bytes).
quantity() {
  awk -v q="$1" 'BEGIN {
    n = q; s = q; sub(/[a-zA-Z]+$/, "", n); sub(/^[-+0-9.]+/, "", s)
    m["n"] = 1e-9; m["u"] = 1e-6; m["m"] = 1e-3; m[""] = 1; m["k"] = 1e3; m["M"] = 1e6; m["G"] = 1e9
    m["Ki"] = 1024; m["Mi"] = 1048576; m["Gi"] = 1073741824
    if (!(s in m) || n == "") exit 1
    printf "%.9f", n * m[s]
  }'
}
# go_duration D: a Go duration string ("2.998s", "3s", "1500ms", "1m0s") in seconds.
go_duration() {
  awk -v d="$1" 'BEGIN {
    total = 0; rest = d
    while (rest != "") {
      if (!match(rest, /^[0-9.]+(ms|us|ns|h|m|s)/)) exit 1
      part = substr(rest, 1, RLENGTH); rest = substr(rest, RLENGTH + 1)
      num = part; sub(/[a-z]+$/, "", num); unit = part; sub(/^[0-9.]+/, "", unit)
      f["h"] = 3600; f["m"] = 60; f["s"] = 1; f["ms"] = 1e-3; f["us"] = 1e-6; f["ns"] = 1e-9
      total += num * f[unit]
    }
    printf "%.6f", total
  }'
}

# ---------------------------------------------------------------------------------------------- the node
echo "VMTEST INFO kernel $(uname -r), cmdline: $(cat /proc/cmdline)"
if grep -q kvm-clock /sys/devices/system/clocksource/clocksource0/available_clocksource 2>/dev/null; then
  info "accelerator kvm"
else
  info "accelerator tcg (software emulation)"
fi

CONTROLLERS="+cpu +memory +io +pids"
enable_subtree() { echo "$CONTROLLERS" >"$1/cgroup.subtree_control"; }
uid_underscored() { echo "$1" | tr - _; }

KUBEPODS=$CG/kubepods.slice
mkdir -p "$KUBEPODS" "$CG/system.slice/nodemeter.service"
enable_subtree "$KUBEPODS"
enable_subtree "$CG/system.slice"
for q in burstable besteffort; do
  mkdir -p "$KUBEPODS/kubepods-$q.slice"
  enable_subtree "$KUBEPODS/kubepods-$q.slice"
done
mkdir -p "$STATE"

# write_config ID TYPE POD NAMESPACE UID SANDBOX_ID CGROUPS_PARENT [CONTAINER_NAME]
write_config() {
  mkdir -p "$STATE/$1"
  if [ "$2" = sandbox ]; then
    name_line=""
  else
    name_line="\"io.kubernetes.cri.container-name\": \"$8\","
  fi
  cat >"$STATE/$1/config.json" <<JSON
{
  "ociVersion": "1.1.0",
  "process": {"user": {"uid": 0, "gid": 0}, "args": ["/bin/sh"], "cwd": "/"},
  "root": {"path": "rootfs"},
  "annotations": {
    $name_line
    "io.kubernetes.cri.container-type": "$2",
    "io.kubernetes.cri.sandbox-id": "$6",
    "io.kubernetes.cri.sandbox-name": "$3",
    "io.kubernetes.cri.sandbox-namespace": "$4",
    "io.kubernetes.cri.sandbox-uid": "$5"
  },
  "linux": {"cgroupsPath": "$7:cri-containerd:$1", "namespaces": [{"type": "pid"}, {"type": "ipc"}]}
}
JSON
}

# make_pod QOS NAME NAMESPACE UID: the pod slice with its sandbox (pause) scope; sets POD_CG, POD_SLICE, SANDBOX.
make_pod() {
  u=$(uid_underscored "$4")
  case $1 in
    guaranteed) POD_SLICE=kubepods-pod$u.slice; POD_CG=$KUBEPODS/$POD_SLICE ;;
    *) POD_SLICE=kubepods-$1-pod$u.slice; POD_CG=$KUBEPODS/kubepods-$1.slice/$POD_SLICE ;;
  esac
  mkdir -p "$POD_CG"
  enable_subtree "$POD_CG"
  SANDBOX=$(id_of "sandbox/$3/$2")
  mkdir -p "$POD_CG/cri-containerd-$SANDBOX.scope"
  write_config "$SANDBOX" sandbox "$2" "$3" "$4" "$SANDBOX" "$POD_SLICE"
  run_in "$POD_CG/cri-containerd-$SANDBOX.scope" sleep 100000
}
# make_container NAME (after make_pod; POD, NS, UID from the make_pod call): sets CTR_CG.
make_container() {
  cid=$(id_of "container/$NS/$POD/$1")
  CTR_CG=$POD_CG/cri-containerd-$cid.scope
  mkdir -p "$CTR_CG"
  write_config "$cid" container "$POD" "$NS" "$UID_" "$SANDBOX" "$POD_SLICE" "$1"
}

# A 16 MiB disk on /dev/loop0 (backed by tmpfs): reading it gives real page cache (inactive_file) and io.stat.
dd if=/dev/zero of=/tmp/disk.img bs=1M count=16 2>/dev/null
losetup /dev/loop0 /tmp/disk.img

# Burstable pod shop/web-7f9c: a CPU burner at half a core; a container holding 24 MiB of anonymous memory
# plus 16 MiB of page cache read from /dev/loop0 (kept open on fd 3: the kernel drops a block device's page
# cache when its last opener closes it); a container whose 12 MiB do not fit its 8 MiB memory.max and go to swap.
POD=web-7f9c NS=shop UID_=0b9e7d36-51c4-4f2a-8e63-a7d90c1b5f48
make_pod burstable "$POD" "$NS" "$UID_"
WEB_CG=$POD_CG
make_container burner
BURNER_CG=$CTR_CG
echo "50000 100000" >"$BURNER_CG/cpu.max"
run_in "$BURNER_CG" sh -c 'while :; do :; done'
make_container memhog
MEMHOG_CG=$CTR_CG
run_in "$MEMHOG_CG" sh -c 'exec 3</dev/loop0; dd if=/dev/loop0 of=/dev/null bs=1M count=16 2>/tmp/dd.log; exec memhog 24 /run/memhog.ready'
make_container cache
CACHE_CG=$CTR_CG
echo 8M >"$CACHE_CG/memory.max"
run_in "$CACHE_CG" memhog 12 /run/cache.ready

# Guaranteed pod shop/db-0 directly under kubepods.slice, limits on the pod and its container.
POD=db-0 NS=shop UID_=9f8e7d6c-5b4a-4392-8180-7f6e5d4c3b2a
make_pod guaranteed "$POD" "$NS" "$UID_"
DB_CG=$POD_CG
echo "100000 100000" >"$DB_CG/cpu.max"
echo 128M >"$DB_CG/memory.max"
make_container postgres
POSTGRES_CG=$CTR_CG
echo "100000 100000" >"$POSTGRES_CG/cpu.max"
echo 128M >"$POSTGRES_CG/memory.max"
run_in "$POSTGRES_CG" memhog 8 /run/postgres.ready

# Burstable pod jobs/api-5c: a container whose worker is OOM-killed while its main process lives on.
POD=api-5c NS=jobs UID_=6a1f0c52-3d8e-4b7a-9c21-5e0f8d4b2a17
make_pod burstable "$POD" "$NS" "$UID_"
make_container oomer
OOMER_CG=$CTR_CG
echo 4M >"$OOMER_CG/memory.max"
echo 0 >"$OOMER_CG/memory.swap.max"
run_in "$OOMER_CG" sleep 100000
run_in "$OOMER_CG" memhog 8

# BestEffort pod jobs/batch-x.
POD=batch-x NS=jobs UID_=c3d4e5f6-0718-4293-a4b5-c6d7e8f90a1b
make_pod besteffort "$POD" "$NS" "$UID_"
make_container worker
WORKER_CG=$CTR_CG
run_in "$WORKER_CG" sleep 100000

for f in memhog cache postgres; do
  i=0
  while [ ! -e /run/$f.ready ] && [ $i -lt 100 ]; do
    usleep 100000
    i=$((i + 1))
  done
done

phase "node laid out"

# ---------------------------------------------------------------------------------------------- the kernel
# These check the layout itself: if they fail, the agent checks below measure nothing meaningful.
if grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts && ! awk '$3 == "cgroup"' /proc/mounts | grep -q .; then
  pass "kernel: pure cgroup v2 at /sys/fs/cgroup, no v1 hierarchy mounted"
else
  fail "kernel: expected cgroup2 at /sys/fs/cgroup and no v1 mount: $(grep cgroup /proc/mounts | tr '\n' ';')"
fi
missing=""
for d in "$BURNER_CG" "$MEMHOG_CG" "$CACHE_CG" "$POSTGRES_CG" "$OOMER_CG" "$WORKER_CG"; do
  for c in cpu memory io pids; do
    grep -qw "$c" "$d/cgroup.controllers" || missing="$missing ${d#"$CG"/}:$c"
  done
done
if [ -z "$missing" ]; then
  pass "kernel: cpu, memory, io, pids reach every container cgroup"
else
  fail "kernel: controllers missing in:$missing"
fi

k0=$(kv "$BURNER_CG/cpu.stat" usage_usec)
t0=$(uptime_s)
th0=$(kv "$BURNER_CG/cpu.stat" nr_throttled)

# ---------------------------------------------------------------------------------------------- the agent
NODEMETER=/bin/nodemeter
run_in "$CG/system.slice/nodemeter.service" "$NODEMETER" agent --cgroup-root "$CG" --proc-root /proc \
  --node-name "$NODE" --listen "$AGENT" --interval 1s --window 3s --pod-source runtime \
  --containerd-state-dir "$STATE" >/tmp/agent.log 2>&1
AGENT_PID=$!
phase "agent started"

sleep 2
k1=$(kv "$BURNER_CG/cpu.stat" usage_usec)
t1=$(uptime_s)
th1=$(kv "$BURNER_CG/cpu.stat" nr_throttled)
kernel_rate=$(calc "($k1 - $k0) / 1e6 / ($t1 - $t0)")
# Not the full half core when the host starves the VM of CPU, never more.
if holds "$kernel_rate >= 0.3 && $kernel_rate <= $QUOTA_CORES + 0.03"; then
  pass "kernel: burner under cpu.max 50000 100000 runs at $kernel_rate cores"
else
  fail "kernel: burner under cpu.max 50000 100000 ran at $kernel_rate cores, expected 0.3..0.53"
fi
if holds "$th1 > $th0"; then
  pass "kernel: burner throttled ($th0 -> $th1 nr_throttled)"
else
  fail "kernel: burner's nr_throttled did not move ($th0 -> $th1)"
fi
anon=$(kv "$MEMHOG_CG/memory.stat" anon)
inactive=$(kv "$MEMHOG_CG/memory.stat" inactive_file)
if holds "$anon >= 24 * 1048576 && $inactive >= 12 * 1048576"; then
  pass "kernel: memhog container holds $anon bytes anon, $inactive bytes inactive_file"
else
  fail "kernel: memhog container holds $anon bytes anon (want >= 24 MiB), $inactive inactive_file (want >= 12 MiB)"
fi
swap=$(cat "$CACHE_CG/memory.swap.current")
if holds "$swap >= 2 * 1048576"; then
  pass "kernel: cache container pushed $swap bytes into swap"
else
  fail "kernel: cache container has only $swap bytes in swap, expected >= 2 MiB"
fi
ooms=$(kv "$OOMER_CG/memory.events" oom_kill)
if holds "$ooms >= 1" && [ -n "$(cat "$OOMER_CG/cgroup.procs")" ]; then
  pass "kernel: oomer container had $ooms OOM kill(s) and still runs"
else
  fail "kernel: oomer container: oom_kill=$ooms, processes: $(cat "$OOMER_CG/cgroup.procs" | tr '\n' ' ')"
fi
rbytes=$(awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^rbytes=/) s += substr($i, 8) } END { print s + 0 }' "$MEMHOG_CG/io.stat")
if holds "$rbytes >= 16 * 1048576"; then
  pass "kernel: io.stat shows the memhog container's $rbytes bytes read"
else
  fail "kernel: io.stat of the memhog container shows $rbytes bytes read, expected >= 16 MiB; dd: $(cat /tmp/dd.log)"
fi

# Wait for a full window: /readyz answers ok once the agent has one.
ready=0
i=0
while [ $i -lt 75 ]; do
  if ! kill -0 "$AGENT_PID" 2>/dev/null; then break; fi
  if scrape /readyz /tmp/readyz && grep -q ok /tmp/readyz; then
    ready=1
    break
  fi
  usleep 200000
  i=$((i + 1))
done
if [ "$ready" = 1 ]; then
  pass "agent: /readyz ok after $(calc "$i * 0.2") s"
else
  if kill -0 "$AGENT_PID" 2>/dev/null; then
    fail "agent: /readyz not ok within 15 s: $(cat /tmp/readyz 2>/dev/null) $(head -c 300 /tmp/readyz.hdr 2>/dev/null)"
  else
    fail "agent: nodemeter agent exited: $(head -c 600 /tmp/agent.log | tr '\n' ' ')"
  fi
fi
if scrape /healthz /tmp/healthz && grep -q ok /tmp/healthz; then
  pass "agent: /healthz ok"
else
  fail "agent: /healthz did not answer ok"
fi

phase "agent ready"
# Two scrapes of /metrics/resource and /metrics/cadvisor about three passes apart, with the kernel's counters
# read right before and right after each.
read_kernel() { # read_kernel SUFFIX: kernel counters into variables named <what>_<SUFFIX>
  eval "kb_$1=$(kv "$BURNER_CG/cpu.stat" usage_usec)"
  eval "kt_$1=$(kv "$BURNER_CG/cpu.stat" nr_throttled)"
  eval "kp_$1=$(kv "$BURNER_CG/cpu.stat" nr_periods)"
  eval "ktu_$1=$(kv "$BURNER_CG/cpu.stat" throttled_usec)"
  eval "kweb_$1=$(kv "$WEB_CG/cpu.stat" usage_usec)"
  eval "kroot_$1=$(kv "$CG/cpu.stat" usage_usec)"
  eval "kpsi_$1=$(psi_total "$BURNER_CG/cpu.pressure" some)"
  eval "ku_$1=$(uptime_s)"
}
read_kernel a
scrape /metrics/resource /tmp/res1
res1=$?
scrape /metrics/cadvisor /tmp/cad1
cad1=$?
read_kernel b
now1=$(date +%s)
sleep 3
read_kernel c
# The node's Metrics API window now covers mostly the quiet 3 s just measured (b..c): this script's own awk
# and wget forks would otherwise count in the node's CPU and not in any span the test can measure.
scrape /apis/metrics.k8s.io/v1beta1/nodes/$NODE /tmp/node
node1=$?
scrape /metrics/resource /tmp/res2
res2=$?
scrape /metrics/cadvisor /tmp/cad2
cad2=$?
read_kernel d
mem_ws=$(working_set "$MEMHOG_CG")
mem_cur=$(cat "$MEMHOG_CG/memory.current")
web_ws=$(working_set "$WEB_CG")
cache_swap=$(cat "$CACHE_CG/memory.swap.current")
root_ws=$(awk '$1 == "anon" { a = $2 } $1 == "file" { f = $2 } $1 == "inactive_file" { i = $2 }
  END { printf "%.0f", a + f - i }' "$CG/memory.stat")

B=$(ctr_labels burner shop web-7f9c)
M=$(ctr_labels memhog shop web-7f9c)
C=$(ctr_labels cache shop web-7f9c)
O=$(ctr_labels oomer jobs api-5c)
WEB='namespace="shop",pod="web-7f9c"'

if [ $res1 -eq 0 ] && [ $res2 -eq 0 ]; then
  pass "resource: GET /metrics/resource 200"
  v=$(value_of /tmp/res2 resource_scrape_error "")
  if [ "$v" = 0 ]; then pass "resource: resource_scrape_error 0"; else fail "resource: resource_scrape_error is '$v', expected 0"; fi
  missing=""
  for f in node_cpu_usage_seconds_total node_memory_working_set_bytes pod_cpu_usage_seconds_total \
    pod_memory_working_set_bytes container_cpu_usage_seconds_total container_memory_working_set_bytes \
    container_start_time_seconds; do
    grep -q "^# HELP $f \[STABLE\] " /tmp/res2 && has_family /tmp/res2 "$f" || missing="$missing $f"
  done
  if [ -z "$missing" ]; then pass "resource: stable families with HELP and samples"; else fail "resource: missing or without [STABLE] HELP:$missing"; fi

  # Containers of web-7f9c: exactly burner, memhog, cache; the sandbox is not a container.
  got=$(awk '/^container_cpu_usage_seconds_total\{/ && /pod="web-7f9c"/ { sub(/.*container="/, ""); sub(/".*/, ""); print }' /tmp/res2 | sort | tr '\n' ' ')
  if [ "$got" = "burner cache memhog " ]; then
    pass "resource: pod web-7f9c has containers burner, cache, memhog (sandbox excluded)"
  else
    fail "resource: containers of web-7f9c are '$got', expected 'burner cache memhog '"
  fi
  missing=""
  for p in 'namespace="shop",pod="db-0"' 'namespace="jobs",pod="api-5c"' 'namespace="jobs",pod="batch-x"' "$WEB"; do
    [ -n "$(value_of /tmp/res2 pod_cpu_usage_seconds_total "$p")" ] || missing="$missing {$p}"
  done
  if [ -z "$missing" ]; then pass "resource: Guaranteed, Burstable and BestEffort pods all listed"; else fail "resource: pods missing:$missing"; fi

  # Cumulative CPU against the kernel: the agent's value is its last pass, at most ~one interval old.
  v1=$(value_of /tmp/res1 container_cpu_usage_seconds_total "$B")
  ts1=$(ts_of /tmp/res1 container_cpu_usage_seconds_total "$B")
  v2=$(value_of /tmp/res2 container_cpu_usage_seconds_total "$B")
  ts2=$(ts_of /tmp/res2 container_cpu_usage_seconds_total "$B")
  if [ -n "$v1" ] && [ -n "$v2" ] && [ -n "$ts1" ] && [ -n "$ts2" ]; then
    if holds "$v2 * 1e6 <= $kb_d + 1 && $v2 * 1e6 >= $kb_c - 1.5 * $QUOTA_CORES * 1e6"; then
      pass "resource: burner cumulative CPU $v2 s within one pass of the kernel's usage_usec ($kb_c..$kb_d)"
    else
      fail "resource: burner CPU $v2 s, kernel usage_usec $kb_c..$kb_d around the scrape"
    fi
    if holds "($ts1 / 1000 - $now1) <= 2 && ($now1 - $ts1 / 1000) <= 3"; then
      pass "resource: sample timestamp $ts1 ms is the read time (wall clock $now1 s)"
    else
      fail "resource: sample timestamp $ts1 ms is far from the wall clock $now1 s"
    fi
    if holds "$ts2 > $ts1"; then
      # The agent's two samples lie within [a, b] and [c, d] (the kernel reads around each scrape), so its rate
      # is bounded by the kernel's rates over the inner (b..c) and outer (a..d) spans, give or take the rate
      # changing while the host starves the VM; and by the quota.
      rate=$(calc "($v2 - $v1) / (($ts2 - $ts1) / 1000)")
      kin=$(calc "($kb_c - $kb_b) / 1e6 / ($ku_c - $ku_b)")
      kout=$(calc "($kb_d - $kb_a) / 1e6 / ($ku_d - $ku_a)")
      if holds "$rate >= ($kin < $kout ? $kin : $kout) - 0.1 && $rate <= ($kin > $kout ? $kin : $kout) + 0.1 && $rate <= $QUOTA_CORES + 0.05 && $rate >= 0.25"; then
        pass "resource: burner CPU rate $rate cores from two scrapes (kernel $kin..$kout over the same span, quota $QUOTA_CORES)"
      else
        fail "resource: burner CPU rate $rate cores from two scrapes, kernel $kin..$kout over the same span, quota $QUOTA_CORES"
      fi
    else
      fail "resource: burner sample timestamp did not advance between scrapes 3 s apart ($ts1, $ts2)"
    fi
  else
    fail "resource: no container_cpu_usage_seconds_total{$B} with a timestamp"
  fi

  # Pod CPU comes from the pod cgroup itself (sandbox included).
  pv=$(value_of /tmp/res2 pod_cpu_usage_seconds_total "$WEB")
  if [ -n "$pv" ] && holds "$pv * 1e6 <= $kweb_d + 1 && $pv * 1e6 >= $kweb_c - 1.5 * 2e6"; then
    pass "resource: pod web-7f9c CPU $pv s matches the pod cgroup's usage_usec"
  else
    fail "resource: pod web-7f9c CPU '$pv' s, pod cgroup usage_usec $kweb_c..$kweb_d"
  fi

  # Working set = memory.current - inactive_file: the 16 MiB of page cache must not count.
  ws=$(value_of /tmp/res2 container_memory_working_set_bytes "$M")
  if [ -n "$ws" ] && holds "($ws - $mem_ws) <= 2097152 && ($mem_ws - $ws) <= 2097152 && $ws >= 24 * 1048576 && $ws < $mem_cur - 8 * 1048576"; then
    pass "resource: memhog working set $ws bytes = memory.current - inactive_file ($mem_ws; memory.current $mem_cur)"
  else
    fail "resource: memhog working set '$ws' bytes, kernel memory.current - inactive_file $mem_ws, memory.current $mem_cur"
  fi
  pws=$(value_of /tmp/res2 pod_memory_working_set_bytes "$WEB")
  if [ -n "$pws" ] && holds "($pws - $web_ws) <= 4194304 && ($web_ws - $pws) <= 4194304"; then
    pass "resource: pod web-7f9c working set $pws bytes (kernel $web_ws)"
  else
    fail "resource: pod web-7f9c working set '$pws' bytes, kernel $web_ws"
  fi
  sw=$(value_of /tmp/res2 container_swap_usage_bytes "$C")
  if [ -n "$sw" ] && holds "($sw - $cache_swap) <= 2097152 && ($cache_swap - $sw) <= 2097152 && $sw > 0"; then
    pass "resource: cache container swap $sw bytes (memory.swap.current $cache_swap)"
  else
    fail "resource: container_swap_usage_bytes{$C} is '$sw', memory.swap.current $cache_swap"
  fi

  # Node series from the root's cpu.stat and memory.stat.
  nv=$(value_of /tmp/res2 node_cpu_usage_seconds_total "")
  if [ -n "$nv" ] && holds "$nv * 1e6 <= $kroot_d + 1 && $nv * 1e6 >= $kroot_c - 1.5 * 2e6"; then
    pass "resource: node CPU $nv s from the root's cpu.stat usage_usec ($kroot_c..$kroot_d)"
  else
    fail "resource: node_cpu_usage_seconds_total '$nv', root usage_usec $kroot_c..$kroot_d"
  fi
  nws=$(value_of /tmp/res2 node_memory_working_set_bytes "")
  if [ -n "$nws" ] && holds "($nws - $root_ws) <= 16777216 && ($root_ws - $nws) <= 16777216"; then
    pass "resource: node working set $nws bytes (root anon + file - inactive_file = $root_ws)"
  else
    fail "resource: node_memory_working_set_bytes '$nws', root anon + file - inactive_file $root_ws"
  fi
else
  fail "resource: GET /metrics/resource failed: $(head -c 200 /tmp/res2.hdr 2>/dev/null | tr '\n' ' ')"
fi

if [ $cad1 -eq 0 ] && [ $cad2 -eq 0 ]; then
  pass "cadvisor: GET /metrics/cadvisor 200"
  p1=$(value_of /tmp/cad1 container_cpu_cfs_throttled_periods_total "$B")
  p2=$(value_of /tmp/cad2 container_cpu_cfs_throttled_periods_total "$B")
  if [ -n "$p1" ] && [ -n "$p2" ] && holds "$p2 > $p1 && $p2 <= $kt_d && $p2 >= $kt_c - 15"; then
    pass "cadvisor: burner throttled periods $p1 -> $p2 (kernel nr_throttled $kt_c..$kt_d)"
  else
    fail "cadvisor: burner container_cpu_cfs_throttled_periods_total '$p1' -> '$p2', kernel nr_throttled $kt_a..$kt_d"
  fi
  pp=$(value_of /tmp/cad2 container_cpu_cfs_periods_total "$B")
  if [ -n "$pp" ] && holds "$pp <= $kp_d && $pp >= $kp_c - 15"; then
    pass "cadvisor: burner periods $pp (kernel nr_periods $kp_c..$kp_d)"
  else
    fail "cadvisor: burner container_cpu_cfs_periods_total '$pp', kernel nr_periods $kp_c..$kp_d"
  fi
  tsec=$(value_of /tmp/cad2 container_cpu_cfs_throttled_seconds_total "$B")
  if [ -n "$tsec" ] && holds "$tsec * 1e6 <= $ktu_d + 1 && $tsec * 1e6 >= $ktu_c - 1.5e6 && $tsec > 0"; then
    pass "cadvisor: burner throttled seconds $tsec (kernel throttled_usec $ktu_c..$ktu_d)"
  else
    fail "cadvisor: burner container_cpu_cfs_throttled_seconds_total '$tsec', kernel throttled_usec $ktu_c..$ktu_d"
  fi
  missing=""
  for r in cpu memory io; do
    for k in waiting stalled; do
      f=container_pressure_${r}_${k}_seconds_total
      [ -n "$(value_of /tmp/cad2 "$f" "$B")" ] || missing="$missing $f"
    done
  done
  if [ -z "$missing" ]; then pass "cadvisor: PSI families for cpu, memory, io (waiting, stalled)"; else fail "cadvisor: PSI series missing for burner:$missing"; fi
  pw=$(value_of /tmp/cad2 container_pressure_cpu_waiting_seconds_total "$B")
  if [ -n "$pw" ] && holds "$pw * 1e6 <= $kpsi_d + 1 && $pw * 1e6 >= $kpsi_c - 1.5e6"; then
    pass "cadvisor: burner cpu waiting $pw s (kernel cpu.pressure some total $kpsi_c..$kpsi_d us)"
  else
    fail "cadvisor: burner container_pressure_cpu_waiting_seconds_total '$pw', kernel some total $kpsi_c..$kpsi_d us"
  fi
  oe=$(value_of /tmp/cad2 container_oom_events_total "$O")
  if [ -n "$oe" ] && holds "$oe == $ooms"; then
    pass "cadvisor: oomer container_oom_events_total $oe (memory.events oom_kill $ooms)"
  else
    fail "cadvisor: container_oom_events_total{$O} is '$oe', memory.events oom_kill $ooms"
  fi
  cs=$(value_of /tmp/cad2 container_memory_swap "$C")
  if [ -n "$cs" ] && holds "($cs - $cache_swap) <= 2097152 && ($cache_swap - $cs) <= 2097152"; then
    pass "cadvisor: cache container_memory_swap $cs (memory.swap.current $cache_swap)"
  else
    fail "cadvisor: container_memory_swap{$C} is '$cs', memory.swap.current $cache_swap"
  fi
else
  fail "cadvisor: GET /metrics/cadvisor failed: $(head -c 200 /tmp/cad2.hdr 2>/dev/null | tr '\n' ' ')"
fi

# The Metrics API, as kubectl top and the HPA read it.
if scrape /apis/metrics.k8s.io/v1beta1/pods /tmp/pods; then
  if grep -qi '^ *content-type: *application/json' /tmp/pods.hdr; then
    pass "metrics.k8s.io: pods answers Content-Type application/json"
  else
    fail "metrics.k8s.io: pods Content-Type is '$(grep -i content-type /tmp/pods.hdr | tr -d '\r')'"
  fi
  flatten_metrics /tmp/pods >/tmp/pods.flat
  kind=$(awk '$3 == "kind" { print $4; exit }' /tmp/pods.flat)
  if [ "$kind" = PodMetricsList ]; then
    pass "metrics.k8s.io: kind PodMetricsList"
  else
    fail "metrics.k8s.io: kind '$kind', expected PodMetricsList"
  fi
  q=$(awk '$1 == "web-7f9c" && $2 == "burner" && $3 == "cpu" { print $4 }' /tmp/pods.flat)
  cores=$(quantity "$q" 2>/dev/null)
  if [ -n "$cores" ] && holds "$cores >= 0.25 && $cores <= $QUOTA_CORES + 0.05"; then
    pass "metrics.k8s.io: burner cpu $q = $cores cores (quota $QUOTA_CORES)"
  else
    fail "metrics.k8s.io: burner cpu '$q', expected about $QUOTA_CORES cores"
  fi
  q=$(awk '$1 == "web-7f9c" && $2 == "memhog" && $3 == "memory" { print $4 }' /tmp/pods.flat)
  bytes=$(quantity "$q" 2>/dev/null)
  mem_ws_now=$(working_set "$MEMHOG_CG")
  if [ -n "$bytes" ] && holds "($bytes - $mem_ws_now) <= 2097152 && ($mem_ws_now - $bytes) <= 2097152"; then
    pass "metrics.k8s.io: memhog memory $q (kernel working set $mem_ws_now)"
  else
    fail "metrics.k8s.io: memhog memory '$q', kernel working set $mem_ws_now"
  fi
  w=$(awk '$1 == "web-7f9c" && $3 == "window" { print $4 }' /tmp/pods.flat)
  ws_s=$(go_duration "$w" 2>/dev/null)
  if [ -n "$ws_s" ] && holds "$ws_s >= 1.5 && $ws_s <= 3.5"; then
    pass "metrics.k8s.io: window $w for --interval 1s --window 3s"
  else
    fail "metrics.k8s.io: window '$w', expected 2..3 s for --interval 1s --window 3s"
  fi
  missing=""
  for p in web-7f9c db-0 api-5c batch-x; do
    grep -q "^$p " /tmp/pods.flat || missing="$missing $p"
  done
  if [ -z "$missing" ]; then pass "metrics.k8s.io: all four pods listed"; else fail "metrics.k8s.io: pods missing:$missing"; fi
else
  fail "metrics.k8s.io: GET /apis/metrics.k8s.io/v1beta1/pods failed: $(head -c 200 /tmp/pods.hdr | tr '\n' ' ')"
fi
if scrape /apis/metrics.k8s.io/v1beta1/namespaces/shop/pods/db-0 /tmp/db && flatten_metrics /tmp/db >/tmp/db.flat &&
  grep -q '^db-0 postgres memory ' /tmp/db.flat && grep -q '^- - kind PodMetrics$' /tmp/db.flat; then
  pass "metrics.k8s.io: namespaces/shop/pods/db-0 is a PodMetrics with container postgres"
else
  fail "metrics.k8s.io: namespaces/shop/pods/db-0: $(head -c 300 /tmp/db 2>/dev/null | tr '\n' ' ')"
fi
if scrape /apis/metrics.k8s.io/v1beta1/namespaces/shop/pods/no-such-pod /tmp/nopod; then
  fail "metrics.k8s.io: an unknown pod answered 200"
elif grep -q ' 404 ' /tmp/nopod.hdr; then
  pass "metrics.k8s.io: an unknown pod answers 404"
else
  fail "metrics.k8s.io: an unknown pod answered: $(head -c 200 /tmp/nopod.hdr | tr '\n' ' ')"
fi
if [ $node1 -eq 0 ] && flatten_metrics /tmp/node >/tmp/node.flat; then
  q=$(awk '$1 == "vmnode" && $3 == "cpu" { print $4 }' /tmp/node.flat)
  cores=$(quantity "$q" 2>/dev/null)
  # The burner's half core plus the agent, over the quiet span b..c.
  node_rate=$(calc "($kroot_c - $kroot_b) / 1e6 / ($ku_c - $ku_b)")
  if [ -n "$cores" ] && holds "$cores >= 0.25 && $cores <= 2.0 && ($cores - $node_rate) <= 0.25 && ($node_rate - $cores) <= 0.25"; then
    pass "metrics.k8s.io: node $NODE cpu $q = $cores cores (kernel root $node_rate over the window)"
  else
    fail "metrics.k8s.io: node $NODE cpu '$q', kernel root rate $node_rate cores over the window"
  fi
  q=$(awk '$1 == "vmnode" && $3 == "memory" { print $4 }' /tmp/node.flat)
  bytes=$(quantity "$q" 2>/dev/null)
  if [ -n "$bytes" ] && holds "($bytes - $root_ws) <= 16777216 && ($root_ws - $bytes) <= 16777216"; then
    pass "metrics.k8s.io: node memory $q (root working set $root_ws)"
  else
    fail "metrics.k8s.io: node memory '$q', root working set $root_ws"
  fi
else
  fail "metrics.k8s.io: GET nodes/$NODE failed: $(head -c 200 /tmp/node.hdr | tr '\n' ' ')"
fi

# The agent's own metrics.
if scrape /metrics /tmp/self; then
  n=$(value_of /tmp/self nodemeter_containers "")
  p=$(value_of /tmp/self nodemeter_pods "")
  if [ "$n" = 6 ] && [ "$p" = 4 ]; then
    pass "self: nodemeter_containers 6, nodemeter_pods 4"
  else
    fail "self: nodemeter_containers '$n' (want 6), nodemeter_pods '$p' (want 4)"
  fi
else
  fail "self: GET /metrics failed: $(head -c 200 /tmp/self.hdr | tr '\n' ' ')"
fi

if kill -0 "$AGENT_PID" 2>/dev/null; then
  kill -TERM "$AGENT_PID"
  i=0
  while kill -0 "$AGENT_PID" 2>/dev/null && [ $i -lt 50 ]; do
    usleep 100000
    i=$((i + 1))
  done
  if kill -0 "$AGENT_PID" 2>/dev/null; then
    fail "agent: still running 5 s after SIGTERM"
    kill -KILL "$AGENT_PID"
  else
    wait "$AGENT_PID"
    rc=$?
    if [ $rc -eq 0 ]; then pass "agent: SIGTERM exits 0"; else fail "agent: SIGTERM exit status $rc"; fi
  fi
fi
if [ $failures -gt 0 ]; then
  echo "VMTEST INFO agent log (last 20 lines):"
  tail -n 20 /tmp/agent.log | sed 's/^/VMLOG /'
fi

phase "agent checks done"
# `nodemeter bench` on this real v2 tree.
timeout 30 "$NODEMETER" bench --cgroup-root "$CG" --iterations 20 >/tmp/bench.out 2>&1
rc=$?
missing=""
for f in cpu.stat memory.current memory.stat memory.events cpu.pressure; do
  grep -q "$f" /tmp/bench.out || missing="$missing $f"
done
if [ $rc -eq 0 ] && [ -z "$missing" ]; then
  pass "bench: nodemeter bench --cgroup-root $CG --iterations 20 measured the v2 file kinds"
  sed 's/^/VMBENCH /' /tmp/bench.out | head -n 40
else
  fail "bench: exit $rc, file kinds missing:$missing; output: $(head -c 400 /tmp/bench.out | tr '\n' ' ')"
fi

# ---------------------------------------------------------------------------------------------- capture
# The cgroups captured, each with what it is.
capture_dirs() {
  echo "$CG|the root"
  echo "$KUBEPODS|kubepods.slice"
  echo "$KUBEPODS/kubepods-burstable.slice|the Burstable QoS slice"
  echo "$WEB_CG|pod shop/web-7f9c (Burstable)"
  echo "$WEB_CG/cri-containerd-$(id_of sandbox/shop/web-7f9c).scope|shop/web-7f9c sandbox (pause)"
  echo "$BURNER_CG|shop/web-7f9c container burner: a shell loop under cpu.max 50000 100000"
  echo "$MEMHOG_CG|shop/web-7f9c container memhog: 24 MiB anonymous + 16 MiB page cache from /dev/loop0"
  echo "$CACHE_CG|shop/web-7f9c container cache: 12 MiB under memory.max 8M, the rest in zram swap"
  echo "$DB_CG|pod shop/db-0 (Guaranteed, cpu.max 100000 100000, memory.max 128M)"
  echo "$POSTGRES_CG|shop/db-0 container postgres: 8 MiB anonymous"
  echo "$OOMER_CG|jobs/api-5c container oomer: one process OOM-killed under memory.max 4M, one sleeping"
}
# capture_snapshot NAME: prints the v2 files of the captured cgroups between VMCAPTURE markers. Only shell
# builtins in the loop (no fork per file), so that the snapshot takes well under a second even under emulation.
capture_snapshot() {
  capture_dirs | while IFS='|' read -r d what; do
    rel=${d#"$CG"}
    rel=${rel#/}
    for f in cgroup.controllers cgroup.subtree_control cgroup.procs cgroup.stat cpu.stat cpu.max cpu.weight \
      cpu.pressure memory.current memory.peak memory.stat memory.events memory.events.local memory.min \
      memory.low memory.high memory.max memory.swap.current memory.swap.max memory.swap.events \
      memory.pressure io.stat io.pressure pids.current pids.max; do
      [ -r "$d/$f" ] || continue
      echo "VMCAPTURE BEGIN $1/${rel:+$rel/}$f"
      while IFS= read -r line; do echo "$line"; done <"$d/$f"
      echo "VMCAPTURE END $1/${rel:+$rel/}$f"
    done
  done
}
if grep -q 'nodemeter.capture=1' /proc/cmdline; then
  echo "VMCAPTURE INFO kernel $(uname -r); command line: $(cat /proc/cmdline)"
  capture_dirs | while IFS='|' read -r d what; do
    rel=${d#"$CG"}
    echo "VMCAPTURE INFO cgroup /${rel#/}: $what"
  done
  echo "VMCAPTURE INFO snapshot t0 at uptime $(uptime_s) s"
  capture_snapshot t0
  echo "VMCAPTURE INFO snapshot t0 done at uptime $(uptime_s) s"
  sleep 1
  echo "VMCAPTURE INFO snapshot t1 at uptime $(uptime_s) s"
  capture_snapshot t1
  echo "VMCAPTURE INFO snapshot t1 done at uptime $(uptime_s) s"
  for p in $(cat "$BURNER_CG/cgroup.procs" "$MEMHOG_CG/cgroup.procs" "$CACHE_CG/cgroup.procs" \
    "$POSTGRES_CG/cgroup.procs" "$OOMER_CG/cgroup.procs"); do
    echo "VMCAPTURE INFO pid $p $(cat /proc/$p/comm 2>/dev/null) $(cat /proc/$p/cgroup 2>/dev/null)"
  done
fi

[ $failures -gt 100 ] && failures=100
exit $failures
