#!/usr/bin/env python3
"""Writes the seeds of each fuzz target into seeds/<target>/ (run from fuzz/).

Seeds are small valid inputs, so the fuzzer starts from the shapes the server really sees.
Protobuf bodies are encoded by hand here (the wire format is tiny) the way Go clients send them.
"""
import base64
import gzip
import io
import json
import os
import struct
import subprocess
import tarfile
import zlib


def write(target, name, data):
    os.makedirs(f"seeds/{target}", exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(f"seeds/{target}/{name}", "wb") as f:
        f.write(data)


# --- protobuf wire format ---------------------------------------------------------------
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field_bytes(num, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def field_varint(num, n):
    return varint(num << 3) + varint(n)


def string_map(num, pairs):
    return b"".join(field_bytes(num, field_bytes(1, k) + field_bytes(2, v)) for k, v in pairs)


def meta(name, labels=()):
    return field_bytes(1, name) + field_bytes(3, "default") + string_map(11, labels)


def envelope(api_version, kind, raw):
    type_meta = field_bytes(1, api_version) + field_bytes(2, kind)
    unknown = field_bytes(1, type_meta) + field_bytes(2, raw) + field_bytes(3, "") + field_bytes(4, "")
    return b"k8s\x00" + unknown


container = field_bytes(1, "web") + field_bytes(2, "busybox") + field_bytes(3, "sleep")
pod_spec = field_bytes(2, container)
protobuf = {
    "configmap": envelope("v1", "ConfigMap", field_bytes(1, meta("cm")) + string_map(2, [("a", "1")])),
    "pod": envelope("v1", "Pod", field_bytes(1, meta("web", [("app", "web")])) + field_bytes(2, pod_spec)),
    "deployment": envelope(
        "apps/v1",
        "Deployment",
        field_bytes(1, meta("web"))
        + field_bytes(
            2,
            field_varint(1, 3)
            + field_bytes(2, string_map(1, [("app", "web")]))
            + field_bytes(3, field_bytes(1, meta("", [("app", "web")])) + field_bytes(2, pod_spec)),
        ),
    ),
    "secret": envelope("v1", "Secret", field_bytes(1, meta("s")) + field_bytes(2, field_bytes(1, "k") + field_bytes(2, b"\x00\xff"))),
}
for name, body in protobuf.items():
    write("protobuf_body", name, body)
    write("request_body", f"protobuf-{name}", b"\x02" + body)

# --- JSON and YAML bodies ---------------------------------------------------------------
pod = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
    "spec": {"containers": [{"name": "web", "image": "busybox", "ports": [{"containerPort": 80}],
                             "env": [{"name": "A", "value": "1"}],
                             "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}]},
}
deployment = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod["spec"]}},
}
service = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]},
}
configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}}
objects = {"pod": pod, "deployment": deployment, "service": service, "configmap": configmap}
for name, obj in objects.items():
    write("request_body", f"json-{name}", b"\x00" + json.dumps(obj).encode())
    yaml = "apiVersion: %s\nkind: %s\nmetadata:\n  name: %s\n  labels: {app: web}\nspec:\n  replicas: 1\n  ports:\n  - port: 80\n" % (
        obj["apiVersion"], obj["kind"], obj["metadata"]["name"])
    write("request_body", f"yaml-{name}", b"\x01" + yaml.encode())
write("request_body", "yaml-anchors", b"\x01a: &x [1, 2]\nb: *x\nc: !!binary aGk=\n")

# --- patches: [type][doc] NUL [patch] ----------------------------------------------------
patches = {
    "json": (0, pod, [{"op": "add", "path": "/metadata/labels/tier", "value": "front"},
                      {"op": "replace", "path": "/spec/containers/0/image", "value": "nginx"},
                      {"op": "move", "from": "/metadata/labels/app", "path": "/metadata/annotations"},
                      {"op": "test", "path": "/kind", "value": "Pod"},
                      {"op": "remove", "path": "/spec/containers/0/env/0"}]),
    "merge": (1, deployment, {"spec": {"replicas": None, "template": {"spec": {"containers": [{"name": "x"}]}}}}),
    "strategic-containers": (2, pod, {"spec": {"containers": [{"name": "web", "image": "nginx"},
                                                              {"name": "side", "image": "busybox"}]}}),
    # The directives as kubectl writes them.
    "strategic-set-element-order": (2, deployment, {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "side"}, {"name": "web"}],
        "containers": [{"name": "side", "image": "busybox"}]}}}}),
    "strategic-delete-item": (2, pod, {"spec": {"containers": [{"name": "web", "$patch": "delete"}]}}),
    "strategic-retain-keys": (2, deployment, {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
    "strategic-service-ports": (2, service, {"spec": {"ports": [{"port": 443, "targetPort": 8443}]},
                                             "metadata": {"finalizers": ["example.com/x"]}}),
}
for name, (kind, doc, patch) in patches.items():
    write("patch_body", name, bytes([kind]) + json.dumps(doc).encode() + b"\x00" + json.dumps(patch).encode())

# --- server-side apply: [kind][force][live] NUL [apply body] ------------------------------
live = dict(deployment)
live["metadata"] = dict(deployment["metadata"], managedFields=[{
    "manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
    "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
        'k:{"name":"web"}': {".": {}, "f:image": {}, "f:name": {}}}}}}}}, {
    "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
    "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:replicas": {}}}}])
apply_yaml = ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n"
              "  template:\n    spec:\n      containers:\n      - name: web\n        image: nginx\n"
              "        ports:\n        - containerPort: 80\n          protocol: TCP\n")
write("server_side_apply", "deployment-update", b"\x01\x00" + json.dumps(live).encode() + b"\x00" + apply_yaml.encode())
write("server_side_apply", "deployment-force", b"\x01\x03" + json.dumps(live).encode() + b"\x00" + apply_yaml.encode())
write("server_side_apply", "pod-create", b"\x00\x00null\x00" + json.dumps(dict(pod, metadata={"name": "fuzz"})).encode())
write("server_side_apply", "service-create", b"\x02\x00null\x00" + json.dumps(dict(service, metadata={"name": "fuzz"})).encode())

# --- selectors: [label] NUL [field] -------------------------------------------------------
for i, (label, field) in enumerate([
    ("app=web,tier!=back", "metadata.name=web-0,spec.nodeName!=x"),
    ("app in (web, api),!legacy,env", "status.phase==Running"),
    ("tier notin (a,b),x.io/y==z", "metadata.namespace!=kube-system"),
    ("version>3,version<10", r"metadata.name=a\,b"),
]):
    write("selectors", f"seed-{i}", f"{label}\x00{field}")

# --- quantities ---------------------------------------------------------------------------
for i, q in enumerate(["500m", "1.5Gi", "-2e3", "0.000001", "129e-2", "1Ei", "+7.", "9223372036854775807k"]):
    write("quantity", f"seed-{i}", q)

# --- SPDY/3.1 frames ----------------------------------------------------------------------
# A stored deflate block has no back-references, so it needs no dictionary; its zlib header
# (0x78 0x01) leaves the dictionary flag off.
def header_block(pairs):
    raw = struct.pack(">I", len(pairs))
    for k, v in pairs:
        raw += struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
    stored = b"\x00" + struct.pack("<H", len(raw)) + struct.pack("<H", 0xFFFF ^ len(raw)) + raw
    return b"\x78\x01" + stored


def control(kind, flags, payload):
    return struct.pack(">HHB", 0x8003, kind, flags) + struct.pack(">I", len(payload))[1:] + payload


def data(stream, flags, payload):
    return struct.pack(">I", stream) + bytes([flags]) + struct.pack(">I", len(payload))[1:] + payload


syn = control(1, 0, struct.pack(">II", 1, 0) + b"\x00\x00" + header_block([("streamtype", "data"), ("port", "80"), ("requestid", "0")]))
write("spdy_frames", "syn-data", syn + data(1, 0, b"hello") + data(1, 1, b""))
write("spdy_frames", "ping-goaway", control(6, 0, struct.pack(">I", 1)) + control(7, 0, struct.pack(">II", 0, 0)))
write("spdy_frames", "rst-window", control(3, 0, struct.pack(">II", 1, 5)) + control(9, 0, struct.pack(">II", 1, 65536)))
write("spdy_frames", "settings", control(4, 0, struct.pack(">I", 1) + struct.pack(">II", 0x07000000, 65536))
      + control(6, 0, struct.pack(">I", 2)))

# --- CRI log lines ------------------------------------------------------------------------
write("cri_log", "seed-0", "2026-11-27T04:45:09.123456789Z stdout F hello\n"
      "2026-11-27T04:45:09.2Z stderr P part one \n2026-11-27T04:45:09.3Z stderr F and two\n")
write("cri_log", "seed-1", "2026-11-27T04:45:09Z stdout F \n\nnot a line\n2026-11-27T04:45:09Z stdout X y\n")

# --- write-ahead log and store entries ------------------------------------------------------
def log_entry_put(create, prev, key, value):
    # kind, create revision, previous revision, key length, key, value: the store codec's layout.
    return bytes([1]) + struct.pack("<QQI", create, prev, len(key)) + key.encode() + value


def wal_record(entries):
    body = b"".join(struct.pack("<QI", rev, len(e)) + e for rev, e in entries)
    crc = zlib.crc32(struct.pack("<I", len(body)) + body)
    return struct.pack("<II", len(body), crc) + body


e1 = log_entry_put(1, 0, "/configmaps/default/a", b'{"data":{"a":"1"}}')
e2 = log_entry_put(1, 1, "/configmaps/default/a", b'{"data":{"a":"2"}}')
write("wal_file", "two-records", wal_record([(1, e1)]) + wal_record([(2, e2), (3, e1)]) + b"\x00" * 64)
write("wal_file", "torn-tail", wal_record([(5, e1)]) + wal_record([(6, e2)])[:-3])
write("store_entry", "put", e1)
write("store_entry", "tombstone", bytes([2]) + struct.pack("<QQI", 1, 4, 5) + b"/a/bc")

value = json.dumps({"data": {"k%d" % i: "v" * 40 for i in range(20)}}).encode()
frame = subprocess.run(["zstd", "-q", "-c", "--no-check"], input=value, capture_output=True, check=True).stdout
zstd_entry = bytes([3]) + struct.pack("<QQI", 1, 0, 2) + b"/z" + struct.pack("<I", len(value)) + frame
write("store_entry", "put-zstd", zstd_entry)
write("wal_file", "zstd-record", wal_record([(7, zstd_entry)]))

# --- continue tokens ------------------------------------------------------------------------
def token(doc, pad=False):
    raw = base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()
    return raw if pad else raw.rstrip("=")


write("continue_token", "valid", token({"v": "meta.k8s.io/v1", "rv": 12, "start": "/pods/default/web-0"}))
write("continue_token", "padded", token({"v": "meta.k8s.io/v1", "rv": 7, "start": "/configmaps/a/b\u00e9"}, pad=True))
write("continue_token", "old-version", token({"v": "meta.k8s.io/v0", "rv": 1, "start": "/x"}))
write("continue_token", "zero-revision", token({"v": "meta.k8s.io/v1", "rv": 0, "start": "/x"}))
write("continue_token", "big-revision", token({"v": "meta.k8s.io/v1", "rv": 18446744073709551615, "start": "/x"}))

# --- image manifests, indexes and configs: [kind] body ----------------------------------------
# The first byte: odd is a config; even is a manifest or index, with bits 1-2 picking the node
# platform (amd64, arm64, arm/v7, arm/v6) an index is resolved for.
def digest(c):
    return "sha256:" + c * 64


oci_manifest = {
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest("a"), "size": 400},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest("b"), "size": 1000,
                "annotations": {"org.opencontainers.image.title": "rootfs"}}],
}
docker_manifest = dict(oci_manifest, mediaType="application/vnd.docker.distribution.manifest.v2+json")
platforms = [("amd64", None), ("arm64", "v8"), ("arm", "v7"), ("arm", "v6"), ("arm", "v5"), ("arm64", None)]
oci_index = {
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [dict({"mediaType": oci_manifest["mediaType"], "digest": digest("%x" % i), "size": 500,
                        "platform": dict({"os": "linux", "architecture": arch}, **({"variant": v} if v else {}))})
                  for i, (arch, v) in enumerate(platforms)]
    + [{"mediaType": oci_manifest["mediaType"], "digest": digest("f"), "size": 9,
        "platform": {"os": "unknown", "architecture": "unknown"}}],
}
docker_list = dict(oci_index, mediaType="application/vnd.docker.distribution.manifest.list.v2+json")
bare_index = {"schemaVersion": 2, "manifests": oci_index["manifests"][:3]}
config = {
    "architecture": "arm64", "os": "linux",
    "config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["sleep 1"], "Env": ["PATH=/bin"], "User": "1000:1000",
               "WorkingDir": "/srv", "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "Labels": {"a": "b"}},
    "rootfs": {"type": "layers", "diff_ids": [digest("c"), digest("d")]},
    "history": [{"created_by": "ADD rootfs"}],
}
null_config = {"config": {"Cmd": None, "Env": None, "ExposedPorts": None}, "rootfs": {"type": "layers", "diff_ids": []}}
for name, kind, doc in [("oci-manifest", 0, oci_manifest), ("docker-manifest", 0, docker_manifest),
                        ("oci-index-amd64", 0, oci_index), ("oci-index-arm-v7", 4, oci_index),
                        ("docker-list-arm64", 2, docker_list), ("index-without-media-type", 6, bare_index),
                        ("config", 1, config), ("config-nulls", 3, null_config)]:
    write("image_manifest", name, bytes([kind]) + json.dumps(doc).encode())

# --- layer tars -------------------------------------------------------------------------------
# Unpacked into <tmp>/berth-fuzz-layer-<n>/root beside a file named sentinel; escapes aim at that
# sentinel, at <tmp>/berth-fuzz-escaped and at /berth-fuzz-escaped (src/fuzzing.rs checks all).
def layer(entries, fmt=tarfile.GNU_FORMAT):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, kind, target, body in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode, info.mtime = kind, target, 0o755, 1_000_000
            if kind == tarfile.DIRTYPE:
                info.mode = 0o700
            if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 8, 0
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    # tarfile pads to 10 KiB records; the end-of-archive marker is two zero blocks.
    end = len(out.getvalue().rstrip(b"\0"))
    return out.getvalue()[: -(-end // 512) * 512 + 1024]


REG, DIR, SYM, LNK = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
ordinary = layer([("etc", DIR, "", b""), ("etc/hosts", REG, "", b"127.0.0.1 localhost\n"),
                  ("bin", DIR, "", b""), ("bin/sh", REG, "", b"\x7fELF"), ("bin/ash", LNK, "bin/sh", b""),
                  ("lib", SYM, "bin", b""), ("etc/.wh.old", REG, "", b""), ("var/.wh..wh..opq", REG, "", b"")])
write("layer_tar", "ordinary", ordinary)
write("layer_tar", "ordinary-gzip", gzip.compress(ordinary, mtime=0))
write("layer_tar", "ordinary-zstd",
      subprocess.run(["zstd", "-q", "-c", "--no-check"], input=ordinary, capture_output=True, check=True).stdout)
write("layer_tar", "dot-dot", layer([("../sentinel", REG, "", b"overwritten"),
                                      ("a/../../berth-fuzz-escaped", REG, "", b"x")]))
write("layer_tar", "absolute", layer([("/berth-fuzz-escaped", REG, "", b"x"), ("/etc/", DIR, "", b"")]))
write("layer_tar", "symlink-out", layer([("up", SYM, "../..", b""), ("up/berth-fuzz-escaped", REG, "", b"x"),
                                          ("top", SYM, "/", b""), ("top/berth-fuzz-escaped", DIR, "", b""),
                                          ("s", SYM, "../sentinel", b""), ("s", REG, "", b"overwritten")]))
write("layer_tar", "hardlink-out", layer([("h", LNK, "../sentinel", b""), ("p", LNK, "/etc/passwd", b""),
                                           ("d", SYM, "..", b""), ("d2", LNK, "d/sentinel", b"")]))
write("layer_tar", "devices", layer([("dev", DIR, "", b""), ("dev/sda", tarfile.BLKTYPE, "", b""),
                                      ("dev/tty", tarfile.CHRTYPE, "", b""), ("dev/fifo", tarfile.FIFOTYPE, "", b"")]))
write("layer_tar", "long-names", layer([("d/" + "n" * 300, REG, "", b"long"), ("l" * 200, SYM, "t" * 300, b"")]))
write("layer_tar", "pax", layer([("p" * 120, REG, "", b"pax"), ("x", SYM, "y" * 150, b"")], fmt=tarfile.PAX_FORMAT))

# --- websocket frames: [protocol] client frames ---------------------------------------------
# The first byte picks v4.channel.k8s.io, v5.channel.k8s.io or port-forward's SPDY tunnel.
def ws_frame(opcode, payload, fin=True):
    mask = b"\x11\x22\x33\x44"
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


resize = b"\x04" + json.dumps({"Width": 80, "Height": 24}).encode()
exec_session = (ws_frame(2, b"\x00ls -l\n") + ws_frame(9, b"ping") + ws_frame(2, resize)
                + ws_frame(2, b"\x00par", fin=False) + ws_frame(0, b"t two\n") + ws_frame(8, struct.pack(">H", 1000)))
write("websocket_frames", "v4-exec", b"\x00" + exec_session)
write("websocket_frames", "v5-close-stdin", b"\x01" + ws_frame(2, b"\x00echo\n") + ws_frame(2, b"\xff\x00")
      + ws_frame(10, b"") + ws_frame(1, "text is ignored \u00e9".encode()) + ws_frame(8, b""))
write("websocket_frames", "spdy-tunnel", b"\x02" + ws_frame(2, syn) + ws_frame(2, data(1, 0, b"GET / HTTP/1.0\r\n\r\n"))
      + ws_frame(2, data(1, 1, b"")))
write("websocket_frames", "long-lengths", b"\x00" + ws_frame(2, b"\x00" + b"a" * 300)
      + bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 40) + b"\x00" * 8)

# --- CBOR bodies (application/cbor) ---------------------------------------------------------
# A ConfigMap behind the self-described tag (55799) with byte-string keys and values, and a
# Deployment in indefinite-length maps with a chunked text string and a half-precision float.
write("cbor_body", "configmap", bytes.fromhex(
    "d9d9f7a4446b696e6449436f6e6669674d61704464617461a141784131486d65746164617461a1446e616d65"
    "41614a61706956657273696f6e427631"))
write("cbor_body", "deployment", bytes.fromhex(
    "bf646b696e646a4465706c6f796d656e746a61706956657273696f6e67617070732f7631686d6574616461"
    "7461bf646e616d6563776562ff6473706563bf687265706c696361730366706175736564f465726174696f"
    "f93e00666c6162656c737f61616162ffffff"))
