"""The engine: one reconcile run of a site and of each of its targets — revision choice,
plan, apply and prune through the providers, the inventory, the typed per-target state, and the
status written in a ``finally``. Takes its settings as values (:class:`EngineSettings`) and
reports through :class:`RunObserver`; knows nothing of the daemon or the CLI.

Entry point: :class:`reconciler.engine.pipeline.Reconciler`.
"""
