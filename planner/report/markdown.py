"""Render a Report as Markdown that reads well on GitHub / GitLab and in an editor.

Order: summary and recommendation, options side by side, each option's servers (roles table, memory per
device as a Mermaid pie with a plain-text bar fallback, headroom), what to buy, predicted vs measured,
deployment commands, assumptions and sources. Tables are GitHub-flavoured (pipes escaped in cells).

Every string that comes from a plan or a bench file (role, model, server and host names, reasons, notes,
errors, commands) is inert here: `md` for text (no raw HTML, no new heading, list, link or emphasis),
`code` for inline code spans, `fence` for blocks (a fence longer than any backtick run inside), `plain`
inside a fence (one line, no control characters).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from planner.plan.schema import Plan
from planner.report.i18n import check_lang, purchase_text, t, why_text
from planner.report.model import BenchFile, DeviceView, Headroom, OptionView, Report, RoleView, build_report
from planner.units import GIB, fmt_bytes, fmt_gib

BAR_WIDTH = 40


def render_report(plan: Plan, bench_runs: Sequence[BenchFile] = (), lang: str = "en") -> str:
    """The Markdown report for `plan` (and bench files): what `agiplan report` and `recommend --report` write."""
    return render_markdown(build_report(plan, bench_runs), lang)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")  # C0, DEL, C1, Unicode line separators
_INLINE = re.compile(r"([\\`*\[\]~])")  # code, emphasis, links and images, strikethrough
_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")  # Q4_K_M stays as it is: intraword _ is literal
# a heading, quote, list or rule at the start of a line: "#", ">", "+", "=", "-", or "1." / "1)"
_BLOCK_START = re.compile(r"^(\s*)([#>+=-]|\d{1,9}(?=[.)]))")


def plain(text: object) -> str:
    """`text` on one line without control characters (for a fence's content and Mermaid titles)."""
    return _CONTROL.sub(" ", str(text)).strip()


def md(text: object, *, line_start: bool = False) -> str:
    """Plan or bench `text` as inert inline Markdown: one line, HTML's & < > as entities (no raw HTML such
    as <img onerror=...>), the characters that would start code, emphasis or a link backslash-escaped
    (CommonMark: any ASCII punctuation may be escaped); with `line_start` (a paragraph or a list item's
    text), also what would make it a heading, quote, list or rule."""
    out = plain(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = _UNDERSCORE.sub(r"\_", _INLINE.sub(r"\\\1", out))
    return _BLOCK_START.sub(_escape_block_start, out) if line_start else out


def _escape_block_start(m: re.Match[str]) -> str:
    """`# x` -> `\\# x`, `- x` -> `\\- x`; `1. x` -> `1\\. x` (a backslash before a digit is literal)."""
    lead, mark = m[1], m[2]
    return f"{lead}{mark}\\" if mark[0].isdigit() else f"{lead}\\{mark}"


def code(text: object) -> str:
    """`text` as an inline code span that it cannot close: delimited by one backtick more than its longest
    run of backticks, padded with a space where it starts or ends with one (CommonMark 6.1)."""
    body = plain(text)
    ticks = "`" * (max((len(r) for r in re.findall(r"`+", body)), default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{ticks}{pad}{body}{pad}{ticks}"


def fence(info: str, lines: Sequence[str]) -> list[str]:
    """A fenced block around `lines`: at least three backticks, one more than the longest backtick run in
    them, so no line inside (a model name, a command) can close it (CommonMark 4.5)."""
    longest = max((len(r) for line in lines for r in re.findall(r"`+", line)), default=0)
    marks = "`" * max(3, longest + 1)
    return [f"{marks}{info}", *lines, marks]


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _usd(x: float) -> str:
    return f"{x:,.0f}"


def _why(lang: str, o: OptionView, *, line_start: bool = False) -> str:
    """Why the option is what it is, in `lang` (plans written before structured reasons: their English), as
    inert Markdown: the reasons carry plan strings (role and model names)."""
    why = why_text(lang, o.kind, o.reasons) if o.reasons else o.why
    bought = purchase_text(lang, o)
    return md(f"{why} {bought}" if bought else why, line_start=line_start)


def _kind_text(lang: str, kind: str) -> str:
    return t(lang, f"kind.{kind}")


def _toks(r: RoleView) -> str:
    s = f"{r.decode_tok_s:.1f}"
    if r.min_tok_s is not None:
        s += f" ({r.min_tok_s:g})"
    if not r.meets_target:
        s += " ✗"
    return s


def _breaks_first(lang: str, o: OptionView) -> str:
    if not o.headroom:
        return t(lang, "breaks.unknown")
    for h in o.headroom:
        if h.slot_plus1 == "breaks":
            return t(lang, "breaks.slot", role=md(h.role), device=md(f"{h.server}/{h.slot_plus1_device}"))
        if h.ctx_x2 == "breaks":
            return t(lang, "breaks.ctx", role=md(h.role), device=md(f"{h.server}/{h.ctx_x2_device}"))
    if all(h.ctx_x2 == "unknown" and h.slot_plus1 == "unknown" for h in o.headroom):
        return t(lang, "breaks.unknown")
    return t(lang, "breaks.none")


def _summary(r: Report, lang: str) -> list[str]:
    out = [f"## {t(lang, 'summary')}", ""]
    if r.recommended is None:
        out += [t(lang, "rec_none"), ""]
        return out
    o = r.options[r.recommended]
    out.append(t(lang, "rec_line", index=o.index, kind_text=_kind_text(lang, o.kind), kind=o.kind))
    new = [s for s in o.servers if s.new]
    if o.total_cost_usd <= 0:
        out.append(t(lang, "rec_cost_zero"))
    else:
        servers = ", ".join(f"{md(s.name)}: {md(s.hardware)}" for s in new) or "-"
        out.append(t(lang, "rec_cost", cost=_usd(o.total_cost_usd), servers=servers))
    if o.meets_targets:
        out.append(t(lang, "rec_targets_ok"))
    else:
        out.append(t(lang, "rec_targets_fail", roles=", ".join(md(x) for x in o.failing_roles)))
    out.append(t(lang, "rec_why", why=_why(lang, o)))
    out.append(t(lang, "rec_breaks", text=_breaks_first(lang, o)) + ".")
    others = [f"{x.index} {code(x.kind)}" for x in r.options if x.index != o.index]
    if others:
        out.append(t(lang, "rec_alt", items=", ".join(others)))
    return [*out[:2], " ".join(out[2:]), ""]


def _options_table(r: Report, lang: str) -> list[str]:
    header = [
        t(lang, "col.option"),
        t(lang, "col.kind"),
        t(lang, "col.buy"),
        t(lang, "col.quality"),
        t(lang, "col.targets"),
        *[f"{md(role)} tok/s" for role in r.role_names],
        t(lang, "col.breaks"),
        t(lang, "col.free"),
    ]
    rows: list[list[object]] = []
    for o in r.options:
        label = f"**{o.index}** ({t(lang, 'recommended')})" if o.recommended else str(o.index)
        speeds: list[object] = []
        for role in r.role_names:
            rv = o.role(role)
            speeds.append(_toks(rv) if rv else t(lang, "not_here"))
        free = f"{fmt_gib(o.largest_free_bytes)} ({md(o.largest_free_device)})" if o.largest_free_device else "0"
        rows.append(
            [
                label,
                code(o.kind),
                _usd(o.total_cost_usd),
                f"{o.quality_score:.2f}",
                t(lang, "yes") if o.meets_targets else t(lang, "no"),
                *speeds,
                _breaks_first(lang, o),
                free,
            ]
        )
    out = [f"## {t(lang, 'options')}", "", t(lang, "options_note"), "", *_table(header, rows), ""]
    out += [f"- **{o.index}** {code(o.kind)}: {_why(lang, o)}" for o in r.options]
    out.append("")
    return out


def _role_rows(lang: str, roles: Sequence[RoleView]) -> list[list[object]]:
    rows: list[list[object]] = []
    for rv in roles:
        devs = ", ".join(md(d) for d in rv.devices) or "cpu"
        if rv.gpu_indices:
            devs += " [" + ",".join(f"gpu{i}" for i in rv.gpu_indices) + "]"
        if rv.split_hosts:
            devs += "; " + t(lang, "split_over", hosts=", ".join(md(h) for h in rv.split_hosts))
        if rv.residency == "on-demand":
            res = (
                t(lang, "residency.on-demand", swap=f"{rv.swap_in_s:.1f} s")
                if rv.swap_in_s is not None
                else t(lang, "residency.on-demand-nos")
            )
        else:
            res = t(lang, "residency.always")
        if rv.shares_base_with:
            res += "; " + t(lang, "shares", base=md(rv.shares_base_with))
        model = md(rv.model_name)
        if rv.draft_model_name is not None:
            model += " " + t(
                lang,
                "draft",
                model=md(rv.draft_model_name),
                quant=md(rv.draft_quant or ""),
                speedup=f"{rv.draft_speedup or 0:.2f}",
            )
        rows.append(
            [
                f"**{md(rv.role)}**",
                model,
                md(rv.quant),
                rv.ctx,
                rv.parallel,
                md(rv.engine),
                devs,
                _toks(rv),
                fmt_gib(rv.memory_bytes),
                res,
            ]
        )
    return rows


def _device_label(d: DeviceView) -> str:
    return f"cpu {d.name}" if d.kind == "cpu" else f"gpu{d.index} {d.id}"


def _pie(server: str, d: DeviceView, lang: str) -> list[str]:
    parts = [
        (t(lang, "part.weights"), d.weights_bytes),
        (t(lang, "part.kv"), d.kv_cache_bytes),
        (t(lang, "part.compute"), d.compute_bytes),
        (t(lang, "part.overhead"), d.overhead_bytes),
        (t(lang, "part.margin"), d.margin_bytes),
        (t(lang, "part.free"), max(0, d.free_bytes)),
    ]
    title = plain(f"{server} {_device_label(d)}: {fmt_gib(d.used_bytes)} / {fmt_gib(d.capacity_bytes)}")
    lines = ["pie showData", f"    title {title}"]
    lines += [f'    "{name}" : {b / GIB:.2f}' for name, b in parts if b / GIB >= 0.005]
    return fence("mermaid", lines)


def text_bar(d: DeviceView, width: int = BAR_WIDTH) -> str:
    """W weights, K KV, C compute, O overhead, x margin, . free — scaled to the device's capacity."""
    cap = max(1, d.capacity_bytes)
    cells = ""
    for ch, b in (
        ("W", d.weights_bytes),
        ("K", d.kv_cache_bytes),
        ("C", d.compute_bytes),
        ("O", d.overhead_bytes),
        ("x", d.margin_bytes),
    ):
        n = min(round(width * b / cap), width - len(cells))
        cells += ch * max(0, n)
    cells += "." * (width - len(cells))
    over = "  OVER" if d.free_bytes < 0 else ""
    return f"[{cells}] {fmt_gib(d.used_bytes)} / {fmt_gib(d.capacity_bytes)}{over}"


def _memory(server: str, devices: Sequence[DeviceView], lang: str) -> list[str]:
    out = [f"#### {t(lang, 'memory_chart')}", ""]
    for d in devices:
        if d.used_bytes == 0 and d.kind == "cpu":
            continue
        out += [*_pie(server, d, lang), ""]
    width = max((len(plain(_device_label(d))) for d in devices), default=0)
    bars = [f"{plain(_device_label(d)).ljust(width)}  {text_bar(d)}" for d in devices]
    return [*out, *fence("text", [*bars, t(lang, "legend")]), ""]


def _fit_text(lang: str, fit: str, extra: int | None, device: str | None, reason: str) -> str:
    if fit == "fits":
        return t(lang, "fit.fits", extra=fmt_bytes(extra)) if extra else t(lang, "fit.fits_noextra")
    if fit == "breaks":
        return t(lang, "fit.breaks", device=md(device or "?"), extra=fmt_bytes(extra or 0))
    why = t(lang, f"reason.{reason}") if reason in ("split", "shared", "hf") else md(reason)
    return t(lang, "fit.unknown", reason=why)


def _headroom(lang: str, rooms: Sequence[Headroom]) -> list[str]:
    if not rooms:
        return []
    rows = [
        [
            f"**{md(h.role)}**",
            _fit_text(lang, h.ctx_x2, h.ctx_x2_extra_bytes, h.ctx_x2_device, h.reason),
            _fit_text(lang, h.slot_plus1, h.slot_plus1_extra_bytes, h.slot_plus1_device, h.reason),
        ]
        for h in rooms
    ]
    header = [t(lang, "col.role"), t(lang, "col.ctx_x2"), t(lang, "col.slot_plus1")]
    return [f"#### {t(lang, 'headroom')}", "", *_table(header, rows), ""]


def _option(o: OptionView, lang: str) -> list[str]:
    key = "option_heading_rec" if o.recommended else "option_heading"
    out = [
        f"## {t(lang, key, index=o.index, kind_text=_kind_text(lang, o.kind))}",
        "",
        _why(lang, o, line_start=True),
        "",
    ]
    if o.failing_roles:
        out += [t(lang, "failing", roles=", ".join(md(x) for x in o.failing_roles)), ""]
    header = [
        t(lang, "col.role"),
        t(lang, "col.model"),
        t(lang, "col.quant"),
        t(lang, "col.ctx"),
        t(lang, "col.slots"),
        t(lang, "col.engine"),
        t(lang, "col.devices"),
        t(lang, "col.toks"),
        t(lang, "col.memory"),
        t(lang, "col.residency"),
    ]
    for s in o.servers:
        state = t(lang, "server_new", cost=_usd(s.cost_usd)) if s.new else t(lang, "server_existing")
        out += [f"### {t(lang, 'server_heading', name=code(s.name), state=state, hardware=md(s.hardware))}", ""]
        if s.roles:
            out += [f"#### {t(lang, 'roles')}", "", *_table(header, _role_rows(lang, s.roles)), ""]
        out += _memory(s.name, s.devices, lang)
        out += _headroom(lang, [h for h in o.headroom if h.server == s.name])
    return out


_BASES = ("street", "used", "msrp", "estimate", "assumption")  # price bases the renderer phrases


def _buy(r: Report, lang: str) -> list[str]:
    out = [f"## {t(lang, 'buy')}", ""]
    if not r.parts:
        return [*out, t(lang, "buy_none"), ""]
    header = [
        t(lang, "col.option"),
        t(lang, "col.server"),
        t(lang, "col.part"),
        t(lang, "col.count"),
        t(lang, "col.condition"),
        t(lang, "col.price"),
        t(lang, "col.date"),
    ]
    rows = [
        [
            f"{p.option} {code(r.options[p.option].kind)}",
            md(p.server),
            f"{md(p.id)} ({md(p.kind)})" if p.kind else md(p.id),
            p.count,
            t(lang, f"cond.{p.condition}"),
            _usd(p.price_usd) if p.price_usd is not None else "?",
            md(p.price_date or "?") + (f" ({t(lang, f'basis.{p.price_basis}')})" if p.price_basis in _BASES else ""),
        ]
        for p in r.parts
    ]
    return [*out, *_table(header, rows), "", t(lang, "buy_note"), ""]


def _fmt_metric(name: str, v: float | None) -> str:
    if v is None:
        return "-"
    return fmt_gib(v) if name.endswith("_bytes") else f"{v:.1f}"


def _bench(r: Report, lang: str) -> list[str]:
    if not r.bench:
        return []
    hosts = ", ".join(sorted({f"{code(b.host)} ({md(b.file)})" for b in r.bench}))
    out = [f"## {t(lang, 'bench')}", "", f"> {t(lang, 'bench_note', hosts=hosts)}", ""]
    header = [
        t(lang, "col.run"),
        t(lang, "col.verdict"),
        t(lang, "col.metric"),
        t(lang, "col.predicted"),
        t(lang, "col.measured"),
        t(lang, "col.residual"),
    ]
    rows: list[list[object]] = []
    for b in r.bench:
        who = f"{md(b.role)}: " if b.role else ""
        run = f"{who}{md(b.model)} · {md(b.engine)} · ctx {b.ctx}"
        verdict = t(lang, f"verdict.{b.verdict}") if b.verdict in ("pass", "fail") else md(b.verdict)
        for m in b.metrics:
            res = f"{m.residual * 100:+.1f} %" if m.residual is not None else "-"
            rows.append(
                [
                    run,
                    verdict,
                    t(lang, f"metric.{m.name}"),
                    _fmt_metric(m.name, m.predicted),
                    _fmt_metric(m.name, m.measured),
                    res,
                ]
            )
    return [*out, *_table(header, rows), ""]


def _deploy(r: Report, lang: str) -> list[str]:
    if not r.deployment:
        return []
    out = [f"## {t(lang, 'deploy')}", "", t(lang, "deploy_note"), ""]
    for d in r.deployment:
        out += [f"### {t(lang, 'deploy_server', name=code(d.server))}", ""]
        if d.error:
            out += [t(lang, "deploy_error", error=md(d.error)), ""]
            continue
        out += [*fence("bash", [plain(p.command) for p in d.processes]), ""]
        if d.endpoints:
            rows = [(md(role), md(url)) for role, url in sorted(d.endpoints.items())]
            out += [*_table([t(lang, "col.role"), t(lang, "col.url")], rows), ""]
        out += [f"- {md(n, line_start=True)}" for n in d.notes]
        if d.notes:
            out.append("")
    return out


def _sources(r: Report, lang: str) -> list[str]:
    out = [f"## {t(lang, 'assumptions')}", ""]
    out += [f"- {md(a, line_start=True)}" for a in r.assumptions]
    out += [f"- {t(lang, 'assume.ctx')}", f"- {t(lang, 'assume.margin')}", ""]
    rows: list[list[object]] = [
        [t(lang, "src.memory"), t(lang, "src.memory_is")],
        [t(lang, "src.speed"), t(lang, "src.speed_is")],
        [t(lang, "src.headroom"), t(lang, "src.headroom_is")],
    ]
    for s in r.sources:
        kind, _, rest = s.what.partition(":")
        ident = rest.rsplit(":", 1)[0] if kind == "gpu" else rest
        label = {
            "gpu": t(lang, "src.gpu_memory", id=md(ident)),
            "price": t(lang, "src.price", id=md(ident)),
            "model": t(lang, "src.model", id=md(ident)),
            "bench": t(lang, "src.bench", file=md(ident)),
        }.get(kind, md(s.what))
        src = t(lang, f"src.{s.source}") if s.source in ("gguf-header", "hf-config", "measured") else md(s.source)
        rows.append([label, src])
    return [*out, *_table([t(lang, "col.number"), t(lang, "col.source")], rows), ""]


def render_markdown(r: Report, lang: str = "en") -> str:
    check_lang(lang)
    out = [
        f"# {t(lang, 'title', stack=md(r.stack_name))}",
        "",
        f"_{t(lang, 'generated', created=md(r.plan_created_at), version=md(r.agiplan_version))}_",
        "",
    ]
    out += _summary(r, lang)
    out += _options_table(r, lang)
    for o in r.options:
        out += _option(o, lang)
    out += _buy(r, lang)
    out += _bench(r, lang)
    out += _deploy(r, lang)
    out += _sources(r, lang)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"
