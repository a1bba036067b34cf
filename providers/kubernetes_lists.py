"""Lists of our objects, one per kind and namespace per run, for the kubernetes provider.

An idle run of the provider reads the live objects it checks from lists instead of one GET
each: :class:`RunLists` lists a kind in a namespace the first time a component of the run needs
it (only objects carrying our labels, ``app.kubernetes.io/managed-by=reconciler`` and the
target's, in pages of :data:`PAGE`) and answers every later look-up of the run from that list.
Listed objects are kept without other managers' ``managedFields`` entries: the provider
compares our fields only.

A list serves one run:

* :meth:`RunLists.begin_run` (the provider's ``begin_run``, for the engine to call when a
  target's run starts) forgets every list;
* so does the observation of a component already observed since the lists were taken (the
  next run has begun, or an instance is being run again), and a list older than
  :data:`RUN_SECONDS` is taken again: without ``begin_run``, only a run that observes none
  of the components the previous one did, within that time, may use the previous lists;
* our own writes (apply, prune, delete) put what the server answered in the list (a deleted
  object, or one whose write failed, leaves it), so no list hides our own changes.

An object that is not in a list is not known to be absent (someone may have removed our label):
:meth:`RunLists.find` answers None and the provider reads it with a GET. A kind the server
refuses to list (403: RBAC grants get but not list) is read object by object from then on;
another refusal falls back the same way for the rest of the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from reconciler.provider_api import PermanentError

from .kube_client import KubeClient, ResourceInfo
from .kube_objects import FIELD_MANAGER, ObjectRef, stamp_ownership

__all__ = ["PAGE", "RUN_SECONDS", "ListingClient", "RunLists"]

_log = structlog.get_logger(__name__)

PAGE = 500  # objects per list request
RUN_SECONDS = 10.0  # a list older than this is taken again, even within a run

ListKey = tuple[str, str, str]  # api_version, kind, namespace ("" for cluster-scoped kinds)


class ListingClient(KubeClient):
    """The provider's client, with lists of one kind in one namespace."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.list_requests = 0  # pages asked for, for the provider's log line

    def list(self, info: ResourceInfo, namespace: str, selector: str,
             page: int = PAGE) -> list[dict[str, Any]]:
        """Every object of ``info``'s kind in ``namespace`` (all namespaces for a
        cluster-scoped kind) matching the label ``selector``, page by page. Items carry their
        ``apiVersion`` and ``kind`` (lists of built-in kinds leave them out)."""
        where = f"namespace {namespace}" if info.namespaced else "the cluster"
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = [("labelSelector", selector), ("limit", str(page))]
            if token:
                query.append(("continue", token))
            self.list_requests += 1
            answer = self._request("GET", info.path(namespace), query=query, action="list",
                                   what=f"{info.kind} objects in {where}")
            assert answer is not None  # missing_ok is off: a 404 raised
            for item in answer.get("items") or []:
                if isinstance(item, dict):
                    item["apiVersion"], item["kind"] = info.api_version, info.kind
                    items.append(item)
            token = str((answer.get("metadata") or {}).get("continue") or "")
            if not token:
                return items


def selector_for(target: str) -> str:
    """The label selector of our objects on ``target``: the labels every object we apply
    carries (the target's only when its name fits a label value)."""
    labels = stamp_ownership({"metadata": {}}, instance="-", target=target,
                             component="-")["metadata"]["labels"]
    return ",".join(f"{key}={labels[key]}" for key in sorted(labels)
                    if key in ("app.kubernetes.io/managed-by", "reconciler.io/target"))


class RunLists:
    """The lists of one run (see the module docstring)."""

    def __init__(self, client: ListingClient, target: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._selector = selector_for(target)
        self._clock = clock
        self._lists: dict[ListKey, dict[str, dict[str, Any]] | None] = {}
        self._taken: dict[ListKey, float] = {}
        self._observed: set[str] = set()
        self._forbidden: set[tuple[str, str]] = set()
        self._lock = threading.Lock()  # in case components are observed concurrently

    def begin_run(self) -> None:
        with self._lock:
            self._forget()

    def _forget(self) -> None:
        self._lists.clear()
        self._taken.clear()
        self._observed.clear()

    def observing(self, component: str) -> None:
        """``component`` is being observed: a second observation means a new run."""
        with self._lock:
            if component in self._observed:
                self._forget()
            self._observed.add(component)

    def wrote(self, ref: ObjectRef, answer: dict[str, Any] | None) -> None:
        """We wrote ``ref`` and the server answered ``answer`` (the object as it is now),
        or None: a delete, or a write whose outcome is unknown (read it with a GET)."""
        with self._lock:
            for key, listed in self._lists.items():
                if listed is None or key[1:] != (ref.kind, ref.namespace) \
                        or key[0].rpartition("/")[0] != ref.group:
                    continue
                if answer is not None and key[0] == ref.api_version:
                    listed[ref.name] = _trimmed(answer)
                else:
                    listed.pop(ref.name, None)

    def find(self, info: ResourceInfo, ref: ObjectRef) -> dict[str, Any] | None:
        """The live object as this run's list of its kind and namespace has it; None when
        the list does not have it or the kind cannot be listed (read it with a GET)."""
        key = (info.api_version, info.kind, ref.namespace if info.namespaced else "")
        with self._lock:
            listed = self._lists.get(key)
            if key not in self._lists or self._clock() - self._taken[key] > RUN_SECONDS:
                listed = self._lists[key] = self._take(info, key[2])
                self._taken[key] = self._clock()
        return None if listed is None else listed.get(ref.name)

    def _take(self, info: ResourceInfo, namespace: str) -> dict[str, dict[str, Any]] | None:
        if (info.api_version, info.kind) in self._forbidden:
            return None
        try:
            items = self._client.list(info, namespace, self._selector)
        except PermanentError as exc:
            if exc.reason == "Forbidden":
                self._forbidden.add((info.api_version, info.kind))
            _log.info("list_refused", kind=info.kind, namespace=namespace, error=exc.message)
            return None
        return {str((item.get("metadata") or {}).get("name")): _trimmed(item) for item in items}


def _trimmed(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` without other managers' managedFields entries (often most of an object):
    the provider compares our fields only, and a list is kept for the whole run."""
    meta = item.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("managedFields"), list):
        meta["managedFields"] = [e for e in meta["managedFields"]
                                 if isinstance(e, dict) and e.get("manager") == FIELD_MANAGER]
    return item
