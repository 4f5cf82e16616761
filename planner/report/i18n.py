"""Report text in English and Russian (`--lang ru`). Numbers, ids and commands are the same in both.

`t(lang, key, **values)` formats one string; a key missing in Russian falls back to English, and a test
checks that both languages have the same keys and placeholders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from planner.errors import PlannerError
from planner.plan.schema import Gain, Reason
from planner.units import fmt_gib

Lang = Literal["en", "ru"]
LANGS: tuple[Lang, ...] = ("en", "ru")


def check_lang(lang: str) -> None:
    """Refuse a language the report has no text for (t() would quietly write English)."""
    if lang not in LANGS:
        raise PlannerError(f"--lang {lang!r}: use one of {', '.join(LANGS)}.")


EN: dict[str, str] = {
    "title": "agiplan report: {stack}",
    "generated": "From plan created {created} by agiplan {version}.",
    "summary": "Summary",
    "rec_line": "**Recommendation: option {index}, {kind_text}** (`{kind}`).",
    "rec_cost_zero": "Nothing to buy: it runs on the servers you have.",
    "rec_cost": "To buy: {cost} USD ({servers}).",
    "rec_targets_ok": "Every role meets its speed target.",
    "rec_targets_fail": "Roles below their speed target: {roles}.",
    "rec_none": "**No option meets every role's target.** The options below show what each one misses.",
    "rec_why": "Why: {why}",
    "why.meets_all": "meets every floor",
    "why.misses": "misses floors for {roles}",
    "why.fit": "{role}: {model} at {quant} with {ctx} context × {parallel} needs {need}; {devices} give {capacity} of "
    "which {margin} must stay free{offload}: fits with {spare} to spare{shared}",
    "why.fit_cpu": "{role}: {model} at {quant} with {ctx} context × {parallel} needs {need} of RAM (CPU only)",
    "why.offload": ", {offload} offloaded to RAM",
    "why.shared": " (shared)",
    "why.role_misses": "{role} fails: {misses}",
    "why.buys_hardware": "buys ${cost} of hardware",
    "why.no_plan": "{kind}: {detail}",
    "miss.below_floor": "{value} tok/s < floor {limit}",
    "miss.swap_slow": "swap-in {value} s > {limit} s",
    "miss.must_stay_loaded": "must stay loaded (residency: always) but the serial plan loads one model at a time",
    "miss.unplaced": "nothing fits",
    "nop.nothing_fits": "nothing fits",
    "nop.no_second_server": "no second server within the budget (see --budget / --allow)",
    "nop.no_split_role": "no role stays loaded to split over two servers",
    "nop.no_split_gpu": "no second server with a GPU to split a model over",
    "nop.search_limit": "the search stopped at its limits (--time-limit {limit} s for this option kind) without a "
    "plan; a larger --time-limit may find one",
    "nop.time_out_sets": "the search's {limit} s ran out with {sets} server set(s) not searched (a larger "
    "--time-limit searches them)",
    "buys": "${extra} more than option {base} buys: {gains}.",
    "buys_nothing": "${extra} more than option {base} buys nothing: no role gets a better model, quant tier or floor.",
    "same_as": "Same plan as option {base}: the ${extra} of hardware would hold nothing a role needs.",
    "gain.model": "{role} runs {model} {quant} instead of {instead_model} {instead_quant}",
    "gain.tier": "{role} runs {quant} ({tier}) instead of {instead_quant} ({instead_tier})",
    "gain.floor": "{role} meets its floor at {tok_s} tok/s instead of {instead_tok_s}",
    "gain.placed": "{role} is placed ({model} {quant}, {tok_s} tok/s) instead of left out",
    "rec_breaks": "What breaks first: {text}",
    "rec_alt": "Also considered: {items}.",
    "kind.one-server-serial": "one server, one model at a time (others swapped in on demand)",
    "kind.one-server-concurrent": "one server, several models at once",
    "kind.two-server": "keep the main server and add a second one",
    "kind.split": "one big model split across two servers",
    "options": "Options side by side",
    "options_note": "Speeds are decode tokens/s per conversation with all roles busy at once; the target is in "
    "brackets. *ctx×2* and *+1 slot*: whether the role still fits with its context doubled or one more "
    "conversation, other roles unchanged.",
    "col.option": "option",
    "col.kind": "kind",
    "col.buy": "to buy, USD",
    "col.quality": "quality",
    "col.targets": "meets targets",
    "col.breaks": "what breaks first",
    "col.free": "free for one more role",
    "yes": "yes",
    "no": "no",
    "recommended": "recommended",
    "not_here": "—",
    "breaks.ctx": "{role}: context ×2 ({device})",
    "breaks.slot": "{role}: +1 slot ({device})",
    "breaks.none": "context ×2 and +1 slot fit for every role",
    "breaks.unknown": "not computed",
    "option_heading": "Option {index}: {kind_text}",
    "option_heading_rec": "Option {index}: {kind_text} (recommended)",
    "failing": "Below target: {roles}.",
    "server_heading": "Server {name} ({state}): {hardware}",
    "server_new": "to buy, {cost} USD",
    "server_existing": "existing",
    "roles": "Roles",
    "col.role": "role",
    "col.model": "model",
    "col.quant": "quant",
    "col.ctx": "ctx",
    "col.slots": "slots",
    "col.engine": "engine",
    "col.devices": "devices",
    "col.toks": "tok/s (target)",
    "col.memory": "memory",
    "col.residency": "resident",
    "residency.always": "always",
    "residency.on-demand": "on demand, swap-in {swap}",
    "residency.on-demand-nos": "on demand",
    "shares": "shares {base}",
    "draft": "+ draft {model} {quant} (decode ×{speedup})",
    "split_over": "split over {hosts}",
    "memory_chart": "Memory per device",
    "legend": "W weights · K KV cache · C compute · O overhead · x margin kept free · . free",
    "part.weights": "weights",
    "part.kv": "KV cache",
    "part.compute": "compute",
    "part.overhead": "overhead",
    "part.margin": "margin",
    "part.free": "free",
    "headroom": "Headroom",
    "col.ctx_x2": "context ×2",
    "col.slot_plus1": "+1 slot",
    "fit.fits": "fits (+{extra})",
    "fit.fits_noextra": "fits",
    "fit.breaks": "does not fit on {device} (+{extra})",
    "fit.unknown": "not computed ({reason})",
    "reason.split": "split across servers",
    "reason.shared": "shares another role's model",
    "reason.hf": "hf: model, not resolved offline",
    "buy": "What to buy",
    "buy_none": "Nothing: every option runs on the existing servers.",
    "buy_note": "Prices are the catalog's with their month: street price where one was found, else the launch "
    "list price (MSRP); used only where the stack allows used parts (allow_used). Check today's prices.",
    "col.condition": "condition",
    "cond.new": "new",
    "cond.used": "used",
    "basis.street": "street",
    "basis.used": "used",
    "basis.msrp": "MSRP",
    "basis.estimate": "estimate",
    "basis.assumption": "assumption",
    "col.server": "server",
    "col.part": "part",
    "col.count": "count",
    "col.price": "price, USD",
    "col.date": "price date",
    "bench": "Predicted vs measured",
    "bench_note": "**Measured** on {hosts} (`agiplan bench`). Residual = measured ÷ predicted − 1; "
    "verdict as the bench gave it.",
    "col.run": "run",
    "col.verdict": "verdict",
    "col.metric": "figure",
    "col.predicted": "predicted",
    "col.measured": "measured",
    "col.residual": "residual",
    "metric.weights_bytes": "weights",
    "metric.kv_cache_bytes": "KV cache",
    "metric.compute_bytes": "compute",
    "metric.decode_tok_s": "decode tok/s",
    "metric.prefill_tok_s": "prefill tok/s",
    "verdict.pass": "pass",
    "verdict.fail": "FAIL",
    "deploy": "Deployment (recommended option)",
    "deploy_note": "Write these as scripts with `agiplan deploy plan.json --server NAME --out DIR` "
    "(add `--compose` for compose.yaml). Agents call roles through the router "
    "(`router/litellm-config.yaml`), not ports.",
    "deploy_server": "Server {name}",
    "deploy_error": "Not generated: {error}",
    "col.url": "endpoint",
    "assumptions": "Assumptions and sources",
    "assume.ctx": "`ctx` is the context of one conversation; llama.cpp gets `-c ctx×slots -np slots`, "
    "Ollama `num_ctx ctx` with OLLAMA_NUM_PARALLEL = slots, vLLM `--max-model-len ctx --max-num-seqs slots`.",
    "assume.margin": "Each GPU keeps its margin free (llama.cpp `--fit` keeps 1 GiB; vLLM's "
    "`--gpu-memory-utilization` is a fraction of the card's total memory).",
    "col.number": "number",
    "col.source": "source",
    "src.memory": "memory per role and device",
    "src.memory_is": "agiplan estimator: weights from the GGUF header when a file is given, else catalog "
    "architecture × quantization; KV cache and compute buffers by formula (planner/estimate)",
    "src.speed": "tokens/s",
    "src.speed_is": "bandwidth model (planner/estimate/speed.py), calibrated where a profile exists; shared "
    "bandwidth when roles decode at once",
    "src.headroom": "ctx×2 / +1 slot",
    "src.headroom_is": "the estimator run again for that change on the same devices",
    "src.gguf-header": "read from the GGUF header",
    "src.hf-config": "Hugging Face config.json",
    "src.measured": "measured on this host by agiplan bench",
    "src.gpu_memory": "{id}: memory",
    "src.price": "{id}: price",
    "src.model": "{id}: architecture",
    "src.bench": "{file}",
}

RU: dict[str, str] = {
    "title": "Отчёт agiplan: {stack}",
    "generated": "По плану от {created}, agiplan {version}.",
    "summary": "Коротко",
    "rec_line": "**Рекомендация: вариант {index}, {kind_text}** (`{kind}`).",
    "rec_cost_zero": "Покупать ничего не нужно: всё работает на имеющихся серверах.",
    "rec_cost": "Купить: на {cost} USD ({servers}).",
    "rec_targets_ok": "Все роли укладываются в заданную скорость.",
    "rec_targets_fail": "Роли ниже заданной скорости: {roles}.",
    "rec_none": "**Ни один вариант не выполняет все цели.** Ниже видно, чего не хватает каждому.",
    "rec_why": "Почему: {why}",
    "why.meets_all": "все роли получают нужную скорость",
    "why.misses": "не достигает нужной скорости для: {roles}",
    "why.fit": "{role}: {model} в {quant} с контекстом {ctx} × {parallel} занимает {need}; {devices} дают {capacity}, "
    "из них {margin} должны оставаться свободными{offload}: помещается, остаётся {spare}{shared}",
    "why.fit_cpu": "{role}: {model} в {quant} с контекстом {ctx} × {parallel} занимает {need} ОЗУ (только CPU)",
    "why.offload": ", {offload} вынесено в ОЗУ",
    "why.shared": " (на всех)",
    "why.role_misses": "{role} не укладывается: {misses}",
    "why.buys_hardware": "покупка оборудования на ${cost}",
    "why.no_plan": "{kind}: {detail}",
    "miss.below_floor": "{value} ток/с < нужных {limit}",
    "miss.swap_slow": "загрузка {value} с > {limit} с",
    "miss.must_stay_loaded": "должна быть загружена всегда (residency: always), а последовательный план держит "
    "одну модель за раз",
    "miss.unplaced": "ничего не помещается",
    "nop.nothing_fits": "ничего не помещается",
    "nop.no_second_server": "нет второго сервера в рамках бюджета (см. --budget / --allow)",
    "nop.no_split_role": "нет постоянно загруженной роли, которую можно разделить между двумя серверами",
    "nop.no_split_gpu": "нет второго сервера с GPU, чтобы разделить модель",
    "nop.search_limit": "поиск остановился на своих пределах (--time-limit {limit} с для этого вида варианта) без "
    "плана; больший --time-limit может его найти",
    "nop.time_out_sets": "{limit} с поиска истекли, {sets} наборов серверов не просмотрено (больший --time-limit их "
    "просмотрит)",
    "buys": "На ${extra} дороже варианта {base}, и за эти деньги: {gains}.",
    "buys_nothing": "На ${extra} дороже варианта {base} и ничего не даёт: ни одна роль не получает лучшую модель, "
    "уровень квантования или нужную скорость.",
    "same_as": "Тот же план, что вариант {base}: оборудование за ${extra} не держит ничего нужного ролям.",
    "gain.model": "{role} работает на {model} {quant} вместо {instead_model} {instead_quant}",
    "gain.tier": "{role} работает на {quant} ({tier}) вместо {instead_quant} ({instead_tier})",
    "gain.floor": "{role} достигает нужной скорости: {tok_s} ток/с вместо {instead_tok_s}",
    "gain.placed": "{role} размещается ({model} {quant}, {tok_s} ток/с), а не остаётся без места",
    "rec_breaks": "Что сломается первым: {text}",
    "rec_alt": "Также рассмотрены: {items}.",
    "kind.one-server-serial": "один сервер, модели по очереди (остальные подгружаются по требованию)",
    "kind.one-server-concurrent": "один сервер, несколько моделей одновременно",
    "kind.two-server": "основной сервер плюс второй",
    "kind.split": "одна большая модель на двух серверах",
    "options": "Варианты рядом",
    "options_note": "Скорость — токенов/с генерации на один диалог, когда заняты все роли; в скобках цель. "
    "*ctx×2* и *+1 слот* — поместится ли роль с удвоенным контекстом или ещё одним диалогом при "
    "неизменных остальных ролях.",
    "col.option": "вариант",
    "col.kind": "вид",
    "col.buy": "купить, USD",
    "col.quality": "качество",
    "col.targets": "цели выполнены",
    "col.breaks": "что сломается первым",
    "col.free": "свободно под ещё одну роль",
    "yes": "да",
    "no": "нет",
    "recommended": "рекомендуется",
    "not_here": "—",
    "breaks.ctx": "{role}: контекст ×2 ({device})",
    "breaks.slot": "{role}: +1 слот ({device})",
    "breaks.none": "контекст ×2 и +1 слот помещаются для всех ролей",
    "breaks.unknown": "не рассчитано",
    "option_heading": "Вариант {index}: {kind_text}",
    "option_heading_rec": "Вариант {index}: {kind_text} (рекомендуется)",
    "failing": "Ниже цели: {roles}.",
    "server_heading": "Сервер {name} ({state}): {hardware}",
    "server_new": "купить, {cost} USD",
    "server_existing": "имеющийся",
    "roles": "Роли",
    "col.role": "роль",
    "col.model": "модель",
    "col.quant": "квант.",
    "col.ctx": "контекст",
    "col.slots": "слоты",
    "col.engine": "движок",
    "col.devices": "устройства",
    "col.toks": "ток/с (цель)",
    "col.memory": "память",
    "col.residency": "в памяти",
    "residency.always": "всегда",
    "residency.on-demand": "по требованию, загрузка {swap}",
    "residency.on-demand-nos": "по требованию",
    "shares": "общая с {base}",
    "draft": "+ черновая модель {model} {quant} (декодирование ×{speedup})",
    "split_over": "разделена между {hosts}",
    "memory_chart": "Память по устройствам",
    "legend": "W веса · K KV-кэш · C вычисления · O накладные · x резерв · . свободно",
    "part.weights": "веса",
    "part.kv": "KV-кэш",
    "part.compute": "вычисления",
    "part.overhead": "накладные",
    "part.margin": "резерв",
    "part.free": "свободно",
    "headroom": "Запас",
    "col.ctx_x2": "контекст ×2",
    "col.slot_plus1": "+1 слот",
    "fit.fits": "помещается (+{extra})",
    "fit.fits_noextra": "помещается",
    "fit.breaks": "не помещается на {device} (+{extra})",
    "fit.unknown": "не рассчитано ({reason})",
    "reason.split": "разделена между серверами",
    "reason.shared": "использует модель другой роли",
    "reason.hf": "модель hf:, офлайн не разрешается",
    "buy": "Что купить",
    "buy_none": "Ничего: все варианты работают на имеющихся серверах.",
    "buy_note": "Цены из каталога с месяцем: розничная, где она найдена, иначе цена на старте продаж (MSRP); "
    "б/у — только если стек разрешает (allow_used). Проверьте текущие цены.",
    "col.condition": "состояние",
    "cond.new": "новая",
    "cond.used": "б/у",
    "basis.street": "розница",
    "basis.used": "б/у",
    "basis.msrp": "MSRP",
    "basis.estimate": "оценка",
    "basis.assumption": "допущение",
    "col.server": "сервер",
    "col.part": "деталь",
    "col.count": "шт.",
    "col.price": "цена, USD",
    "col.date": "дата цены",
    "bench": "Прогноз и измерения",
    "bench_note": "**Измерено** на {hosts} (`agiplan bench`). Отклонение = измерено ÷ прогноз − 1; "
    "вердикт — как его дал bench.",
    "col.run": "прогон",
    "col.verdict": "вердикт",
    "col.metric": "величина",
    "col.predicted": "прогноз",
    "col.measured": "измерено",
    "col.residual": "отклонение",
    "metric.weights_bytes": "веса",
    "metric.kv_cache_bytes": "KV-кэш",
    "metric.compute_bytes": "вычисления",
    "metric.decode_tok_s": "генерация ток/с",
    "metric.prefill_tok_s": "обработка промпта ток/с",
    "verdict.pass": "норма",
    "verdict.fail": "ПРОВАЛ",
    "deploy": "Развёртывание (рекомендуемый вариант)",
    "deploy_note": "Скрипты записывает `agiplan deploy plan.json --server ИМЯ --out КАТАЛОГ` "
    "(с `--compose` — ещё compose.yaml). Агенты обращаются к ролям через маршрутизатор "
    "(`router/litellm-config.yaml`), а не к портам.",
    "deploy_server": "Сервер {name}",
    "deploy_error": "Не сформировано: {error}",
    "col.url": "адрес",
    "assumptions": "Допущения и источники",
    "assume.ctx": "`ctx` — контекст одного диалога; llama.cpp получает `-c ctx×слоты -np слоты`, "
    "Ollama — `num_ctx ctx` и OLLAMA_NUM_PARALLEL = слоты, vLLM — `--max-model-len ctx --max-num-seqs слоты`.",
    "assume.margin": "На каждой видеокарте остаётся резерв (llama.cpp `--fit` оставляет 1 GiB; "
    "`--gpu-memory-utilization` у vLLM — доля от всей памяти карты).",
    "col.number": "величина",
    "col.source": "источник",
    "src.memory": "память на роль и устройство",
    "src.memory_is": "оценщик agiplan: веса из заголовка GGUF, если дан файл, иначе архитектура из каталога "
    "× квантование; KV-кэш и буферы вычислений по формулам (planner/estimate)",
    "src.speed": "токены/с",
    "src.speed_is": "модель пропускной способности памяти (planner/estimate/speed.py), с калибровкой, если "
    "есть профиль; общая полоса, когда роли генерируют одновременно",
    "src.headroom": "контекст ×2 / +1 слот",
    "src.headroom_is": "повторный расчёт оценщиком для этого изменения на тех же устройствах",
    "src.gguf-header": "прочитано из заголовка GGUF",
    "src.hf-config": "config.json с Hugging Face",
    "src.measured": "измерено на этой машине (agiplan bench)",
    "src.gpu_memory": "{id}: память",
    "src.price": "{id}: цена",
    "src.model": "{id}: архитектура",
    "src.bench": "{file}",
}

TABLES: dict[str, dict[str, str]] = {"en": EN, "ru": RU}


def t(lang: str, key: str, **values: object) -> str:
    table = TABLES.get(lang, EN)
    text = table.get(key, EN[key])
    return text.format(**values) if values else text


TIER_NAMES: dict[str, dict[str, str]] = {
    "ru": {"near-lossless": "почти без потерь", "good": "хорошо", "degraded": "заметно хуже", "poor": "плохо"}
}


def why_text(lang: str, kind: str, reasons: Sequence[Reason]) -> str:
    """An option's reasons (planner.plan.options.option_reasons) as one sentence in `lang`."""
    parts: list[str] = []
    for r in reasons:
        if r.code == "fit":
            ctx_k = f"{r.ctx // 1024}k" if r.ctx % 1024 == 0 else str(r.ctx)
            common = {"role": r.role, "model": r.model, "quant": r.quant, "ctx": ctx_k, "parallel": r.parallel}
            if not r.devices:
                parts.append(t(lang, "why.fit_cpu", need=fmt_gib(r.need_bytes), **common))
                continue
            parts.append(
                t(
                    lang,
                    "why.fit",
                    need=fmt_gib(r.need_bytes),
                    devices=r.devices,
                    capacity=fmt_gib(r.capacity_bytes),
                    margin=fmt_gib(r.margin_bytes),
                    offload=t(lang, "why.offload", offload=fmt_gib(r.offload_bytes)) if r.offload_bytes else "",
                    spare=fmt_gib(r.spare_bytes),
                    shared=t(lang, "why.shared") if r.shared else "",
                    **common,
                )
            )
        elif r.code == "misses":
            parts.append(t(lang, "why.misses", roles=", ".join(r.roles)))
        elif r.code == "role_misses":
            misses = "; ".join(
                t(lang, f"miss.{m.code}", value=f"{m.value:.1f}", limit=f"{m.limit:g}") for m in r.misses
            )
            parts.append(t(lang, "why.role_misses", role=r.role, misses=misses))
        elif r.code == "buys_hardware":
            parts.append(t(lang, "why.buys_hardware", cost=f"{r.cost_usd:,.0f}"))
        elif r.code == "no_plan":
            detail = t(lang, f"nop.{r.detail}", limit=f"{r.limit_s:g}", sets=r.sets_left)
            return t(lang, "why.no_plan", kind=kind, detail=detail)
        else:
            parts.append(t(lang, f"why.{r.code}"))
    return "; ".join(parts) + "."


class Purchase(Protocol):
    """What purchase_text reads of an option (a PlanOption or the report's OptionView)."""

    @property
    def compared_with(self) -> int | None: ...
    @property
    def extra_cost_usd(self) -> float: ...
    @property
    def buys(self) -> list[Gain]: ...
    @property
    def same_as(self) -> int | None: ...


def purchase_text(lang: str, o: Purchase) -> str:
    """What a dearer option's extra cost buys over the cheapest one (planner.plan.recommend), in `lang`;
    "" for an option that is not dearer."""
    if o.compared_with is None:
        return ""
    extra = f"{o.extra_cost_usd:,.0f}"
    if o.same_as is not None:
        return t(lang, "same_as", base=o.same_as, extra=extra)
    if not o.buys:
        return t(lang, "buys_nothing", base=o.compared_with, extra=extra)
    tiers = TIER_NAMES.get(lang, {})
    gains = "; ".join(
        t(
            lang,
            "gain.placed" if not g.instead_model else f"gain.{g.kind}",
            role=g.role,
            model=g.model,
            quant=g.quant,
            tier=tiers.get(g.tier, g.tier),
            instead_model=g.instead_model or "-",
            instead_quant=g.instead_quant,
            instead_tier=tiers.get(g.instead_tier, g.instead_tier),
            tok_s=f"{g.decode_tok_s:g}",
            instead_tok_s=f"{g.instead_decode_tok_s:g}",
        )
        for g in o.buys
    )
    return t(lang, "buys", base=o.compared_with, extra=extra, gains=gains)
