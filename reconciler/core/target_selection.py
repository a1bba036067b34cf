"""Which targets an instance deploys to: its names plus every target its selector matches.

:func:`select_targets` answers for one instance. A fleet renders every instance, and the
plan, the rollouts and the fleet views ask again for many instances of one fleet, so the
answer is looked up in a :class:`TargetIndex` of the fleet (made on first use and kept by
it, see :attr:`~reconciler.core.model.Fleet.target_index`): its targets by site, and by each
label they have (their own or inherited from their sites). A selector's labels are then
sets to intersect instead of every target's labels to work out and compare; the answer is
the same as comparing them one by one, which is still what is done for a selector or a
fleet the index cannot hold (a label value that cannot be a dict key, a selector asking for
a label to be null). Pure: reads nothing but the fleet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.core.model import Fleet, Instance, Selector, Target

__all__ = ["TargetIndex", "select_targets"]


class TargetIndex:
    """The targets of one fleet by site and by label (see the module docstring)."""

    __slots__ = ("_under", "by_label", "by_site", "targets")

    def __init__(self, fleet: Fleet) -> None:
        # by name, the last one of a name as when every target is compared (the fleet's
        # own mapping when it is by name, as the loader makes it)
        self.targets: Mapping[str, Target] = fleet.targets
        if any(name != target.name for name, target in fleet.targets.items()):
            self.targets = {target.name: target for target in fleet.targets.values()}
        by_site: dict[str, list[str]] = {}
        by_label: dict[tuple[str, Any], list[str]] | None = {}
        for target in fleet.targets.values():
            by_site.setdefault(target.site, []).append(target.name)
            if by_label is None:
                continue
            try:
                for item in fleet.target_labels(target).items():
                    by_label.setdefault(item, []).append(target.name)
            except TypeError:  # a value that cannot be a key: compare one by one
                by_label = None
        # kept as long as the fleet is: tuples, the smallest way to hold the names
        self.by_site = {site: tuple(names) for site, names in by_site.items()}
        self.by_label = None if by_label is None else \
            {item: tuple(names) for item, names in by_label.items()}
        self._under: dict[frozenset[str], set[str]] = {}

    def under(self, fleet: Fleet, roots: frozenset[str]) -> set[str]:
        """The sites whose chain reaches one of ``roots``."""
        found = self._under.get(roots)
        if found is None:
            found = self._under[roots] = {
                name for name, chain in fleet.site_chains.items()
                if any(s.name in roots for s in chain)}
        return found

    def labelled(self, match: Mapping[str, Any]) -> set[str] | None:
        """The names of the targets that have every label of ``match``; None when the index
        cannot say."""
        if self.by_label is None:
            return None
        found: list[tuple[str, ...]] = []
        try:
            for key, value in match.items():
                if value is None:  # a missing label matches it as well
                    return None
                found.append(self.by_label.get((key, value), ()))
        except TypeError:
            return None
        found.sort(key=len)
        return set(found[0]).intersection(*found[1:])


def _matching(fleet: Fleet, sel: Selector, index: TargetIndex) -> Iterable[Target]:
    """The targets ``sel`` matches, in no particular order."""
    under: set[str] | None = None
    if sel.sites:
        roots = frozenset(s.name for ref in sel.sites if (s := fleet.find_site(ref)) is not None)
        under = index.under(fleet, roots)
    names = index.labelled(sel.match_labels) if sel.match_labels else None
    if sel.match_labels and names is None:  # compared one by one
        return [t for t in fleet.targets.values()
                if (under is None or t.site in under)
                and all(fleet.target_labels(t).get(k) == v
                        for k, v in sel.match_labels.items())]
    if names is None:  # sites only
        assert under is not None
        return [index.targets[n] for site in under for n in index.by_site.get(site, ())]
    found = [index.targets[n] for n in names]
    return found if under is None else [t for t in found if t.site in under]


def select_targets(fleet: Fleet, instance: Instance) -> list[Target]:
    """Targets an instance deploys to: its names plus every target its selector matches,
    by name."""
    chosen: dict[str, Target] = {}
    for name in instance.names:
        target = fleet.targets.get(name)
        if target is not None:
            chosen[name] = target
    sel = instance.selector
    if sel is not None and (sel.sites or sel.match_labels):
        for target in _matching(fleet, sel, fleet.target_index):
            chosen[target.name] = target
    return sorted(chosen.values(), key=lambda t: t.name)
