"""The pure core: the fleet model and everything that turns a checked-out revision into
validated, rendered placements — loading, schemas, checks, rendering, templating, secrets,
errors and diagnostics — plus the small I/O utilities every layer shares (atomic state files,
the process runner, backoff) and the provider contract's definitions.

Imports nothing of the layers above (engine, gitops, daemon, cli, providers).
"""
