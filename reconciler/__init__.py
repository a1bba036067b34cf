"""Reconciler: a GitOps reconciler daemon for fleets of edge sites."""

__version__ = "0.1.0"
