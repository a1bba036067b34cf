"""What the helm binaries need around the Kubernetes API test server, for Helm tests.

:class:`HelmAPIServer` is ``tests.kubeapi.KubeAPIServer`` with the two things helm asks for
that the kubernetes provider's client never does:

* an OpenAPI v3 index (``/openapi/v3`` and one document per group-version) saying that every
  served kind accepts the ``fieldValidation`` query parameter, so helm leaves schema
  validation to the server instead of downloading the whole schema (which this server does
  not have);
* request bodies in the Kubernetes protobuf encoding: helm stores its releases as Secrets
  through client-go's typed client, which writes protobuf. :func:`decode_protobuf` turns the
  few kinds helm writes that way (Secret, ConfigMap, DeleteOptions) into their JSON form.

:func:`write_chart` writes a small chart (one ConfigMap carrying ``values.value``), and
:class:`ChartRepository` serves packaged charts from 127.0.0.1 the way a chart repository
does (``index.yaml`` and ``.tgz`` files), and can be stopped to play an unreachable one.
Used by ``test_helm_rollback.py``.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import yaml

from tests.kubeapi import KubeAPIServer

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "bin"

_PROTOBUF = "application/vnd.kubernetes.protobuf"
_MAGIC = b"k8s\x00"


class HelmAPIServer(KubeAPIServer):
    """The test API server, answering helm's OpenAPI and protobuf requests as well."""

    def start(self) -> HelmAPIServer:
        super().start()
        return self

    def __enter__(self) -> HelmAPIServer:
        return self.start()

    def _dispatch(self, method: str, path: str, query: dict[str, str],
                  content_type: str | None, raw: bytes, agent: str) -> tuple[int, Any]:
        if method == "GET" and (path == "/openapi/v3" or path.startswith("/openapi/v3/")):
            return self._openapi(path.removeprefix("/openapi/v3").strip("/"))
        if content_type == _PROTOBUF and raw:
            raw, content_type = json.dumps(decode_protobuf(raw)).encode(), "application/json"
        return super()._dispatch(method, path, query, content_type, raw, agent)

    def _openapi(self, group_version: str) -> tuple[int, Any]:
        types = self._store.types()

        def prefix(group: str, version: str) -> str:
            return f"apis/{group}/{version}" if group else "api/v1"

        if not group_version:
            return 200, {"paths": {prefix(t.group, t.version): {
                "serverRelativeURL": f"/openapi/v3/{prefix(t.group, t.version)}?hash=0"}
                for t in types}}
        paths: dict[str, Any] = {}
        for t in types:
            if prefix(t.group, t.version) != group_version:
                continue
            scope = "namespaces/{namespace}/" if t.namespaced else ""
            paths[f"/{group_version}/{scope}{t.plural}/{{name}}"] = {"patch": {
                "x-kubernetes-group-version-kind": {"group": t.group, "version": t.version,
                                                    "kind": t.kind},
                "parameters": [{"name": "fieldValidation", "in": "query",
                                "schema": {"type": "string"}}],
                "responses": {}}}
        if not paths:
            return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "NotFound", "code": 404}
        return 200, {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.31.0"},
                     "paths": paths}


# ---------------------------------------------------------------- protobuf bodies

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, Any]]:
    """(field number, value) of one protobuf message: ints for varints, bytes otherwise."""
    out: list[tuple[int, Any]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i:i + size], i + size
        else:
            raise ValueError(f"protobuf wire type {wire} is not supported")
        out.append((number, value))
    return out


def _strings(fields: list[tuple[int, Any]], number: int) -> list[str]:
    return [bytes(v).decode() for n, v in fields if n == number]


def _map(fields: list[tuple[int, Any]], number: int) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for n, entry in fields:
        if n == number:
            kv = dict(_fields(entry))
            out[bytes(kv.get(1, b"")).decode()] = bytes(kv.get(2, b""))
    return out


def _object_meta(buf: bytes) -> dict[str, Any]:
    fields = _fields(buf)
    meta: dict[str, Any] = {}
    for number, name in ((1, "name"), (2, "generateName"), (3, "namespace"), (5, "uid"),
                         (6, "resourceVersion")):
        found = _strings(fields, number)
        if found and found[0]:
            meta[name] = found[0]
    for number, name in ((11, "labels"), (12, "annotations")):
        mapping = _map(fields, number)
        if mapping:
            meta[name] = {k: v.decode() for k, v in mapping.items()}
    if _strings(fields, 14):
        meta["finalizers"] = _strings(fields, 14)
    return meta


def decode_protobuf(raw: bytes) -> dict[str, Any]:
    """The JSON form of a Secret, ConfigMap or DeleteOptions sent as Kubernetes protobuf
    (``k8s\\0`` + a ``runtime.Unknown`` envelope around the object)."""
    if not raw.startswith(_MAGIC):
        raise ValueError("not a Kubernetes protobuf body")
    envelope = dict(_fields(raw[len(_MAGIC):]))
    type_meta = dict(_fields(envelope.get(1, b"")))
    api_version = bytes(type_meta.get(1, b"")).decode()
    kind = bytes(type_meta.get(2, b"")).decode()
    body = _fields(envelope.get(2, b""))
    obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
    if kind == "DeleteOptions":
        policy = _strings(body, 4)
        if policy:
            obj["propagationPolicy"] = policy[0]
        return obj
    if kind not in ("Secret", "ConfigMap"):
        raise ValueError(f"protobuf body of kind {kind!r} is not decoded by this test server")
    for number, value in body:
        if number == 1:
            obj["metadata"] = _object_meta(value)
    data = _map(body, 2)
    if kind == "Secret":
        obj["data"] = {k: base64.b64encode(v).decode() for k, v in data.items()}
        if _strings(body, 3):
            obj["type"] = _strings(body, 3)[0]
    else:
        obj["data"] = {k: v.decode() for k, v in data.items()}
    return obj


# ---------------------------------------------------------------- charts

def write_chart(directory: Path, name: str = "mini", version: str = "0.1.0") -> Path:
    """A chart of one ConfigMap ``<release>-settings`` whose ``VALUE`` is ``values.value``."""
    (directory / "templates").mkdir(parents=True, exist_ok=True)
    (directory / "Chart.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "v2", "name": name, "version": version}))
    (directory / "values.yaml").write_text("value: unset\n")
    (directory / "templates" / "settings.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\n"
        "data:\n  VALUE: {{ .Values.value | quote }}\n")
    return directory


class ChartRepository:
    """A chart repository on 127.0.0.1 serving the charts packaged into ``root``."""

    def __init__(self, root: Path, helm: Path = TOOLS / "helm") -> None:
        self.root = root
        self.helm = helm
        root.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread: threading.Thread | None = None
        self.requests: list[str] = []
        self._server.requests = self.requests  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def publish(self, chart_dir: Path) -> None:
        """Package ``chart_dir`` into the repository and rebuild its index."""
        env = {"HOME": str(self.root.parent / "helm-home"), "PATH": "/usr/bin:/bin"}
        for argv in ([str(self.helm), "package", str(chart_dir), "--destination",
                      str(self.root)],
                     [str(self.helm), "repo", "index", str(self.root), "--url", self.url]):
            subprocess.run(argv, check=True, capture_output=True, env=env, timeout=60)

    def start(self) -> ChartRepository:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering: the port refuses connections from now on."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
