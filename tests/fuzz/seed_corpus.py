#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora into tests/fuzz/corpus/<fuzzer>/ from the checked-in fixtures
(verbatim kernel files, the fixture trees, the captured cgroup v2 files, the runtime configs) and
from requests and selectors the golden tests use. Deterministic: re-running it rewrites the same
files. Files are named by the SHA-1 of their bytes, as libFuzzer names corpus entries."""
import glob
import hashlib
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
FIXTURES = os.path.join(TESTS, "fixtures")


def write(fuzzer, blobs):
    out = os.path.join(HERE, "corpus", fuzzer)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    seen = set()
    for blob in blobs:
        if isinstance(blob, str):
            blob = blob.encode()
        name = hashlib.sha1(blob).hexdigest()
        if name in seen:
            continue
        seen.add(name)
        with open(os.path.join(out, name), "wb") as f:
            f.write(blob)
    print(f"{fuzzer}: {len(seen)} seeds")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def files(pattern):
    return sorted(p for p in glob.glob(os.path.join(FIXTURES, pattern), recursive=True) if os.path.isfile(p))


# Every cgroup and /proc text format, one file of each distinct content.
CGROUP_FILES = ("cpu.stat", "cpuacct.stat", "cpuacct.usage", "memory.stat", "memory.usage_in_bytes",
                "memory.limit_in_bytes", "memory.max", "memory.swap.max", "memory.current",
                "memory.events", "memory.oom_control", "cpu.pressure", "memory.pressure", "io.pressure",
                "io.stat", "memory.numa_stat", "memory.swap.current", "stat", "meminfo")
parse_seeds = [read(p) for p in files("verbatim/*") if "mountinfo" not in p]
for name in CGROUP_FILES:
    parse_seeds += [read(p) for p in files(f"trees/*/**/{name}")][:6]
    parse_seeds += [read(p) for p in files(f"captured-v2/t0/**/{name}")][:3]
parse_seeds += [b"max\n", b"18446744073709551615\n", b"18446744073709551616\n", b"9223372036854771712\n",
                b"", b"\n", b"-1\n", b"12 \r\n", b"cpu  1 2 3 4 5 6 7 8 9 10\n",
                b"some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"]
write("cgroup_parse", parse_seeds)

write("mountinfo", [read(p) for p in files("verbatim/*mountinfo*") + files("trees/*/proc/self/mountinfo")] +
      [b"36 35 98:0 /mnt1 /mnt\\0402 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"])

paths = []
for expected in files("trees/*/expected.json"):
    doc = json.load(open(expected))
    for pod in doc["pods"]:
        paths.append(pod["rel_path"])
        paths += [c["rel_path"] for c in pod["containers"]]
uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
cid = "4100518a4f79209cc4afc8e502cc819df365d6b7fd1798fab89a3a5ec8dd36ee"
paths += [f"kubepods/pod{uid}/{cid}/nested", f"kubepods.slice/kubepods-burstable.slice/"
          f"kubepods-burstable-pod{uid.replace('-', '_')}.slice/crio-conmon-{cid}.scope",
          f"/kubepods//pod{uid}", f"kubepods/burstable/pod{uid}/docker-{cid}.scope", "kubepods", ""]
write("cgroup_path", paths)

configs = [read(p) for p in files("trees/*/containerd/*/config.json") + files("trees/*/crio/*/userdata/config.json")]
write("runtime_config", configs[:24] + [
    b"2022-01-07T11:33:26.50092793-06:00", b"2023-11-14T22:13:20Z", b"2016-12-31T23:59:60.999999999+00:00",
    b"0000-01-01T00:00:00+23:59", b"9999-12-31T23:59:59.1234567890123Z", b"{}", b"[]", b"null",
    b'{"annotations": {"io.kubernetes.cri-o.Labels": "{\\"app\\":\\"web\\"}"}}'])

write("selector", [
    "", "   ", "app=web", "app==web", "app!=web", "app in (web,db)", "app notin (web)", "app", "!app",
    "app,env=prod", "  app = web ,  tier in ( frontend , backend )  ", "env=", "env in ()",
    "app in (web,,db)", "app=web,app=db", "example.com/team!=x", "in in (in,notin)", "n>5", "n<5",
    "n>x", "app in (web", "=web", "a/b/c=d", "metadata.name=web-1", "metadata.namespace!=kube-system",
    "metadata.name=a\\,b\\=c\\\\d", "metadata.name==x,metadata.namespace=default", "spec.nodeName=n",
    "metadata.name=\\x", "k8s-app=kube-dns,tier notin (a,b,c)", "x" * 64 + "=y"])

quantities = [0, 1, 999, 1000, 1023, 1024, 1500, 1048576, 749785088, 5000000, 487558164, 2000000000,
              2**63, 2**64 - 1, 10**18, 10**19, 1024**6, 3 * 1024**6]
write("quantity", [struct.pack("<QQ", q, r) for q in quantities for r in quantities[::3]])

H = "Host: 127.0.0.1:10250\r\n"
gets = ["/metrics/resource", "/metrics/cadvisor", "/metrics", "/healthz", "/livez?verbose", "/readyz",
        "/stats/summary", "/stats/summary?only_cpu_and_memory=true", "/version", "/apis",
        "/apis/metrics.k8s.io", "/apis/metrics.k8s.io/v1beta1", "/apis/metrics.k8s.io/v1beta1/nodes",
        "/apis/metrics.k8s.io/v1beta1/nodes/fuzz-node", "/apis/metrics.k8s.io/v1beta1/pods",
        "/apis/metrics.k8s.io/v1/pods?labelSelector=app%3Dweb",
        "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app+in+(web,db)&fieldSelector=metadata.namespace!%3Dkube-system",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web-1",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope",
        "/apis/metrics.k8s.io/v1beta1/pods?limit=500&resourceVersion=0&timeout=32s",
        "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=%zz", "/openapi/v2", "/nowhere"]
reqs = [f"GET {g} HTTP/1.1\r\n{H}\r\n" for g in gets]
reqs += [
    f"GET /apis/metrics.k8s.io/v1beta1/pods HTTP/1.1\r\n{H}Accept: application/json;as=Table;v=v1;g=meta.k8s.io\r\n\r\n",
    f"GET /apis/metrics.k8s.io/v1beta1/nodes HTTP/1.1\r\n{H}Accept: application/vnd.kubernetes.protobuf, */*\r\n\r\n",
    f"GET /apis HTTP/1.1\r\n{H}Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList\r\n\r\n",
    f"GET /metrics/resource HTTP/1.1\r\n{H}Accept-Encoding: gzip\r\n\r\n",
    f"HEAD /metrics/resource HTTP/1.1\r\n{H}\r\n",
    f"POST /metrics/resource HTTP/1.1\r\n{H}Content-Length: 5\r\n\r\nhello",
    f"POST /apis/metrics.k8s.io/v1beta1/pods HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "GET /healthz HTTP/1.0\r\n\r\n",
    f"GET /healthz HTTP/1.1\r\n{H}\r\nGET /metrics/resource HTTP/1.1\r\n{H}\r\nGET /stats/summary HTTP/1.1\r\n{H}Connection: close\r\n\r\n",
    f"GET /apis/metrics.k8s.io/v1beta1/pods?pretty=true HTTP/1.1\r\n{H}X-Remote-User: a\r\nX-Remote-Group: b\r\n\r\n",
]
write("http_request", reqs)
