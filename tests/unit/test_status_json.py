"""The JSON of ``reconciler status --format json``: each target is written as
``json.dumps(target_json(...))`` would write it (the documented object), for every kind of row
(reported, Unknown, Orphaned, Stale, Unreadable, with validation errors, instances pinned or
not) and every kind of text (quotes, backslashes, unicode, control characters)."""

from __future__ import annotations

import datetime as dt
import json
import random

from reconciler.cli.status_output import _TargetText, target_json
from reconciler.gitops.fleet_model import ExpectedTarget, FleetIndex, InstanceInfo, SiteInfo
from reconciler.gitops.fleet_status import FleetStatus, InstanceStatus, StatusEntry
from reconciler.gitops.fleet_view import join

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
HEAD = "a" * 40
TEXTS = ["", "ok", 'say "hi"', "back\\slash", "é ☃ 😀", "tab\there", "new\nline", "\x00",
         "a" * 70, "3 components ready", "</script>"]


def entries(rng: random.Random) -> list[StatusEntry]:
    out = []
    for number in range(400):
        site = rng.choice(["eu/berlin", "eu/paris", "é/x", "us"])
        moment = NOW - dt.timedelta(seconds=rng.choice([5, 4000, 20000, 300000]))
        out.append(StatusEntry(
            site=site, target=f"t{number}{rng.choice(TEXTS)[:3]}",
            branch=rng.choice(["reconciler-status/x", "reconciler-fleet-status"]),
            path=f"status/{site}/t{number}.yaml", phase=rng.choice(["Ready", "Failed", ""]),
            message=rng.choice(TEXTS), observed_revision=rng.choice([HEAD, "", "b" * 40]),
            applied_revision=rng.choice([HEAD, ""]), last_good_revision=rng.choice([HEAD, ""]),
            last_change=rng.choice([moment, None]), last_seen=rng.choice([moment, None]),
            error=rng.choice([None, None, rng.choice(TEXTS)]),
            instances=tuple(InstanceStatus(name, rng.choice(["sol", ""]),
                                           rng.choice(["Ready", "Failed", ""]),
                                           rng.choice(["", "1.4.0"]))
                            for name in rng.sample(["app", "on", "ü"], rng.randint(0, 2))),
            errors=rng.choice([0, 0, 3]), blob=""))
    return out


def index(reported: list[StatusEntry], rng: random.Random) -> FleetIndex:
    targets = [ExpectedTarget(e.site, e.target, tuple(rng.sample(["app", "on", "gone"],
                                                                 rng.randint(0, 2))),
                              tuple(rng.sample(TEXTS, rng.choice([0, 0, 2]))),
                              rng.choice([0, 5]))
               for e in reported if rng.random() < 0.8]
    targets += [ExpectedTarget("eu/paris", f"silent-{n}", ("app",), ()) for n in range(20)]
    return FleetIndex(HEAD, (SiteInfo("eu", "region"),), tuple(targets),
                      {"app": InstanceInfo("app", "sol", "1.4.0"),
                       "on": InstanceInfo("on", "s2", "")}, (), 0, broken=("t7",))


def test_each_target_is_written_as_its_documented_object() -> None:
    rng = random.Random(5)
    reported = entries(rng)
    for model in (index(reported, rng), None):
        view = join(model, FleetStatus(tuple(reported), {}, "x"), now=NOW,
                    stale_after=3 * 3600)
        states = {row.state for row in view.rows}
        assert {"Ready", "Failed", "Stale", "Unreadable", "Pending"} <= states
        if model is not None:
            assert {"Unknown", "Orphaned"} <= states
        writer = _TargetText()
        for row in view.rows:
            assert writer.row(row) + "}" == json.dumps(target_json(view, row)), row
