"""Built-in providers, installed as ``reconciler_providers`` and registered under the
entry-point group ``reconciler.providers`` like any third-party provider."""
