"""The git side: the one git runner (:mod:`reconciler.gitops.gitrun`), the source mirror and
checkouts, releases, signature verification, status publishing and reading the fleet's status
branches. Uses the core only.
"""
