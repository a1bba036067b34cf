"""The checks of one revision that need more than one document, one module per concern.

The loader has already checked each document against its schema. ``reconciler.core.validation``
runs these modules around the render stage (``reconciler.core.rendering.render_fleet``), all writing
into one :class:`~reconciler.core.checks.findings.Findings`:

* ``references``: names that must lead somewhere (parent and target sites, instance solutions,
  released versions, target names, selector sites, profiles, ``dependsOn``), cycles (site
  parents, ``dependsOn``), duplicates (component names, binding roles), hierarchy depth;
* ``parameters``: parameter names declared and set where ``editableAt`` allows, required
  values, and the solution's rules applied to the resolved value of every placement;
* ``templates``: template syntax and undefined names, once per solution, and what rendering a
  placement could not resolve;
* ``paths``: repository paths a component names exist and stay inside the repository;
* ``providers``: bindings name installed providers that the local policy allows, the
  providers' own checks of binding configs and rendered properties, a binding for every role.

Pure apart from reading the revision's files (``paths``) and calling the providers' pure
class methods.
"""
