"""A Kubernetes API server for tests (see ``tests.kubeapi.server``)."""

from tests.kubeapi.server import CONNECTION_RESET, KubeAPIServer, RecordedRequest

__all__ = ["CONNECTION_RESET", "KubeAPIServer", "RecordedRequest"]
