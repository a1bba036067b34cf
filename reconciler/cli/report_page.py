"""The page of ``reconciler report``: one Jinja2 template with its style and script inline.

Nothing is loaded at view time (no font, image, script or style from anywhere), so the file
reads the same on a plant's laptop without a network, and stays small enough to mail. The
script only filters and folds what the page holds. Rendered by
``reconciler.cli.report_html`` with autoescaping on: every text from the repository or a
status file is escaped.
"""

from __future__ import annotations

__all__ = ["TEMPLATE"]

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Fleet report: {{ source }}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header,main{padding:12px 20px}header{background:#fff;border-bottom:1px solid #d8dde3}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:20px 0 8px}
.meta{color:#5b6570;margin:0}.meta code{font-size:13px}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600;
 background:#e3e7eb;color:#39424b;margin:0 4px 2px 0;white-space:nowrap}
.state-ready{background:#d5f0dc;color:#17622c}
.state-failed,.state-invalid,.state-blocked,.state-degraded,.state-unreadable{
 background:#fbd9d9;color:#8c1515}
.state-stale{background:#eadcf7;color:#5b2286}.state-unknown,.state-orphaned{
 background:#e3e7eb;color:#4a525a}
.state-progressing,.state-pending{background:#fdf0c8;color:#6e5200}
.warning{background:#fdf0c8;border:1px solid #e8cf7a;padding:6px 10px;border-radius:4px}
.tools{margin:10px 0}.tools input[type=search]{padding:4px 8px;width:260px}
details.site{margin:2px 0 2px 14px;border-left:3px solid #c9d0d6;padding-left:8px}
details.site>summary{cursor:pointer;padding:2px 0}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:6px;
 background:#9aa4ad}
.health-ready{border-left-color:#3aa55d}.health-ready>summary .dot{background:#3aa55d}
.health-progressing{border-left-color:#d9a400}
.health-progressing>summary .dot{background:#d9a400}
.health-stale{border-left-color:#8a4fc4}.health-stale>summary .dot{background:#8a4fc4}
.health-failed{border-left-color:#d23b3b}.health-failed>summary .dot{background:#d23b3b}
.level,.rollup{color:#5b6570;font-size:12px;margin-left:6px}.name{font-weight:600}
table{border-collapse:collapse;background:#fff;margin:4px 0 8px;width:100%}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #e6e9ec;vertical-align:top}
th{font-size:12px;color:#5b6570;font-weight:600}
tr.flagged td:first-child{border-left:4px solid #d23b3b}
tr.has-errors td:first-child{border-left:4px dashed #d23b3b}
tr.state-stale.flagged td:first-child{border-left-color:#8a4fc4}
td.msg{max-width:560px;word-break:break-word}.rev{font-family:monospace}
ul.errors{margin:4px 0 0;padding-left:18px;color:#8c1515;font-size:12px}
.none{color:#5b6570}footer{color:#5b6570;font-size:12px;padding:12px 20px}
.hidden{display:none}
</style>
</head>
<body>
<header>
<h1>Fleet report</h1>
<p class="meta">{{ source }} &middot; ref <code>{{ ref }}</code>{% if revision %} at
<code>{{ revision[:12] }}</code>{% endif %} &middot; generated {{ generated }} &middot;
stale after {{ stale_after }}</p>
<p id="totals">{{ rows|length }} targets:
{% for state, n in counts %}<span class="badge state-{{ state|lower }}">{{ n }} {{ state }}</span>
{% endfor %}</p>
{% if model_error %}<p class="warning">{{ model_error }}</p>{% endif %}
{% if error_count %}<div class="warning">The fleet at this revision has {{ error_count }}
validation error(s){% if fleet_errors %}, including:<ul class="errors">
{% for e in fleet_errors %}<li>{{ e }}</li>{% endfor %}</ul>{% endif %}</div>{% endif %}
</header>
<main>
<div class="tools"><input type="search" id="filter" placeholder="Filter by site or target"
 aria-label="Filter by site or target">
<label><input type="checkbox" id="problems"> Only targets that are not Ready</label>
<button type="button" id="expand">Expand all</button>
<button type="button" id="collapse">Collapse all</button></div>
<section id="sites"><h2>Sites</h2>
{% macro site_node(node) -%}
<details class="site health-{{ node.health }}" data-site="{{ node.path }}"
{%- if node.unfolded %} open{% endif %}>
<summary><span class="dot"></span><span class="name">{{ node.name }}</span>
<span class="level">{{ node.level }}</span><span class="rollup">{{ node.summary }}</span>
</summary>
{% if node.rows %}<table class="targets"><thead><tr><th>Target</th><th>State</th>
<th>Revision</th><th>Instances</th><th>Seen</th><th>Last change</th><th>Message</th></tr>
</thead><tbody>
{% for row in node.rows %}<tr class="target state-{{ row.state|lower }}
{%- if row.flagged %} flagged{% endif %}{% if row.errors %} has-errors{% endif %}"
 data-state="{{ row.state }}" data-target="{{ row.target }}">
<td>{{ row.target }}</td><td><span class="badge state-{{ row.state|lower }}">
{%- if row.flagged %}&#9888; {% endif %}{{ row.state }}</span></td>
<td class="rev"{% if row.observed != row.applied %} title="observed {{ row.observed[:12] }}"
{%- endif %}>{{ row.applied[:8] or "-" }}</td>
<td>{% for i in row.instances %}{{ i.name }}{% if i.version %} {{ i.version }}{% endif %}
{%- if i.release and i.release != i.version %} (runs {{ i.release }}){% endif %}
{%- if i.state != row.state %} <span class="badge state-{{ i.state|lower }}">
{{- i.state }}</span>{% endif %}{% if not loop.last %}<br>{% endif %}{% endfor %}</td>
<td>{{ row.seen }}</td><td>{{ row.last_change }}</td>
<td class="msg">{{ row.message }}{% if row.errors %}<ul class="errors">
{% for e in row.errors %}<li>{{ e }}</li>{% endfor %}</ul>{% endif %}</td></tr>
{% endfor %}</tbody></table>{% endif %}
{% for child in node.children %}{{ site_node(child) }}{% endfor %}
</details>
{%- endmacro %}
{% for node in tree %}{{ site_node(node) }}{% else %}<p class="none">No targets.</p>{% endfor %}
</section>
<section id="instances"><h2>Instances</h2>
{% if instances %}<table><thead><tr><th>Instance</th><th>Solution</th><th>Version</th>
<th>Targets</th></tr></thead><tbody>
{% for i in instances %}<tr data-instance="{{ i.name }}"><td>{{ i.name }}</td>
<td>{{ i.solution }}</td><td>{{ i.version or "-" }}</td><td>{{ i.summary() }}</td></tr>
{% endfor %}</tbody></table>{% else %}<p class="none">No instances.</p>{% endif %}
</section>
<section id="rollouts"><h2>Rollouts</h2>
{% if rollouts %}<table><thead><tr><th>Rollout</th><th>Solution</th><th>Version</th>
<th>State</th><th>Waves</th><th>Targets ready</th><th>Message</th></tr></thead><tbody>
{% for r in rollouts %}<tr data-rollout="{{ r.name }}"><td>{{ r.name }}</td>
<td>{{ r.solution }}</td><td>{{ r.version }}</td><td>{{ r.state }}</td>
<td>{{ r.waves_done }}/{{ r.waves_total }}</td>
<td>{{ r.targets_ready }}/{{ r.targets_total }}</td><td>{{ r.message }}</td></tr>
{% endfor %}</tbody></table>
{% else %}<p class="none">No rollout in progress.</p>{% endif %}
</section>
<section id="history"><h2>Recent changes</h2>
{% if history %}<table><thead><tr><th>When</th><th>Site</th><th>Target</th><th>Phase</th>
<th>Revision</th><th>Message</th></tr></thead><tbody>
{% for c in history %}<tr><td>{{ c.when }}</td><td>{{ c.site }}</td><td>{{ c.target }}</td>
<td>{{ c.before or "new" }} &rarr; {{ c.after or "removed" }}</td>
<td class="rev">{{ c.revision[:8] }}</td><td class="msg">{{ c.message }}</td></tr>
{% endfor %}</tbody></table>
{% else %}<p class="none">No status changes found.</p>{% endif %}
</section>
</main>
<footer>reconciler {{ version }} &middot; {{ rows|length }} targets in {{ site_count }} sites
</footer>
<script>
(function () {
  "use strict";
  var filter = document.getElementById("filter");
  var problems = document.getElementById("problems");
  function apply() {
    var text = filter.value.trim().toLowerCase();
    document.querySelectorAll("tr.target").forEach(function (row) {
      var site = row.closest("details").dataset.site;
      var name = (site + "/" + row.dataset.target).toLowerCase();
      var hide = (text && name.indexOf(text) < 0) ||
        (problems.checked && row.dataset.state === "Ready");
      row.classList.toggle("hidden", Boolean(hide));
    });
  }
  function fold(open) {
    document.querySelectorAll("details.site").forEach(function (d) { d.open = open; });
  }
  filter.addEventListener("input", apply);
  problems.addEventListener("change", apply);
  document.getElementById("expand").addEventListener("click", function () { fold(true); });
  document.getElementById("collapse").addEventListener("click", function () { fold(false); });
}());
</script>
</body>
</html>
"""
