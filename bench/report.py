"""Turn raw measurements into the results document, its markdown table and a PNG chart.

`summarise()` is pure: it takes the raw per-run figures and returns the document written to
`bench/results/latest.json`. Medians are over runs; ratios are computed inside each run (the
two servers measured back to back) and then their median is taken, never a ratio of medians.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

SCHEMA = "chatbridge-bench/1"
TARGETS = ("direct", "floor-proxy", "chatbridge", "before", "litellm", "chatbridge-k2think")
LABELS = {
    "direct": "direct (emulator)",
    "floor-proxy": "minimal proxy (uvicorn + aiohttp) → emulator",
    "chatbridge": "chatbridge → emulator",
    "before": "chatbridge before (--before) → emulator",
    "litellm": "LiteLLM proxy → emulator",
    "chatbridge-k2think": "chatbridge → K2Think emulator",
}
# Targets compared with the direct path and with the minimal proxy.
COMPARED = ("floor-proxy", "chatbridge", "before", "litellm", "chatbridge-k2think")
CONCURRENCY = (1, 8, 32, 64)
MAX_KIB_PER_STREAM = 32
MAX_ADDED_P50_MS = 0.4
MAX_ADDED_TTFC_MS = 1.0
MIN_VS_LITELLM = 3.0
MIN_VS_DIRECT = 0.60
# RSS may settle in the first requests (allocator arenas, caches); growth is judged over the
# second half of the run, where a leak of even 10 bytes a request would show.
MAX_LATE_GROWTH_KIB = 2048


def median(values: list[float | None] | list[float]) -> float | None:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(clean) if clean else None


def _paired(runs_a: list[dict[str, Any]], runs_b: list[dict[str, Any]], key: str, op: str) -> float | None:
    values = []
    for a, b in zip(runs_a, runs_b, strict=False):
        if a is None or b is None or a.get(key) is None or b.get(key) is None:
            continue
        if op == "ratio":
            if b[key]:
                values.append(a[key] / b[key])
        else:
            values.append(a[key] - b[key])
    return median(values)


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """raw: {"meta": {...}, "load": {target: {conc: [LoadResult dict per run]}},
    "streams": {target: [StreamResult dict per run]}, "overhead_header": [ms...],
    "memory": {...}, "growth": {...}, "workers": {...} | None}"""
    load: dict[str, dict[str, list[dict[str, Any]]]] = raw.get("load", {})
    streams: dict[str, list[dict[str, Any]]] = raw.get("streams", {})
    out: dict[str, Any] = {"schema": SCHEMA, **raw.get("meta", {})}

    out["throughput"] = {
        target: {
            str(c): {
                "rps": median([r["rps"] for r in runs]),
                "p50_ms": median([r["p50_ms"] for r in runs]),
                "p99_ms": median([r["p99_ms"] for r in runs]),
                "cpu_ms_per_request": median([r.get("cpu_ms_per_request") for r in runs]),
                "errors": sum(r["errors"] for r in runs),
                "runs": runs,
            }
            for c, runs in sorted(by_conc.items(), key=lambda kv: int(kv[0]))
        }
        for target, by_conc in load.items()
    }
    out["streams"] = {
        target: {
            "ttfc_ms": median([r["ttfc_ms"] for r in runs]),
            "chunks_per_s": median([r["chunks_per_s"] for r in runs]),
            "chunks": runs[-1]["chunks"] if runs else None,
            "errors": sum(r["errors"] for r in runs),
            "runs": runs,
        }
        for target, runs in streams.items()
    }

    streamed: dict[str, dict[str, list[dict[str, Any]]]] = raw.get("stream_load", {})
    out["stream_throughput"] = {
        target: {
            str(c): {"rps": median([r["rps"] for r in runs]), "p50_ms": median([r["p50_ms"] for r in runs]),
                     "cpu_ms_per_request": median([r.get("cpu_ms_per_request") for r in runs]),
                     "errors": sum(r["errors"] for r in runs), "runs": runs}
            for c, runs in sorted(by_conc.items(), key=lambda kv: int(kv[0]))
        }
        for target, by_conc in streamed.items()
    }

    ratios: dict[str, Any] = {}
    direct = load.get("direct", {})
    floor_proxy = load.get("floor-proxy", {})
    for target in COMPARED:
        if target not in load and target not in streamed:
            continue
        mine = load.get(target, {})
        entry: dict[str, Any] = {}
        for c in CONCURRENCY:
            key = str(c)
            if key in mine and key in direct:
                entry[f"rps_vs_direct_c{c}"] = _paired(mine[key], direct[key], "rps", "ratio")
                entry[f"added_p50_ms_c{c}"] = _paired(mine[key], direct[key], "p50_ms", "diff")
                entry[f"added_p99_ms_c{c}"] = _paired(mine[key], direct[key], "p99_ms", "diff")
            if key in mine and key in floor_proxy and target != "floor-proxy":
                entry[f"rps_vs_floor_c{c}"] = _paired(mine[key], floor_proxy[key], "rps", "ratio")
            mine_s, direct_s = streamed.get(target, {}), streamed.get("direct", {})
            if key in mine_s and key in direct_s:
                entry[f"stream_rps_vs_direct_c{c}"] = _paired(mine_s[key], direct_s[key], "rps", "ratio")
            floor_s = streamed.get("floor-proxy", {})
            if key in mine_s and key in floor_s and target != "floor-proxy":
                entry[f"stream_rps_vs_floor_c{c}"] = _paired(mine_s[key], floor_s[key], "rps", "ratio")
        if target in streams and "direct" in streams:
            entry["added_ttfc_ms"] = _paired(streams[target], streams["direct"], "ttfc_ms", "diff")
            entry["chunks_per_s_vs_direct"] = _paired(streams[target], streams["direct"], "chunks_per_s", "ratio")
        ratios[target] = entry
    if "chatbridge" in load and "litellm" in load:
        ratios["chatbridge_vs_litellm"] = {
            f"rps_c{c}": _paired(load["chatbridge"][str(c)], load["litellm"][str(c)], "rps", "ratio")
            for c in CONCURRENCY if str(c) in load["chatbridge"] and str(c) in load["litellm"]
        }
        if "chatbridge" in streams and "litellm" in streams:
            ratios["chatbridge_vs_litellm"]["chunks_per_s"] = _paired(
                streams["chatbridge"], streams["litellm"], "chunks_per_s", "ratio")
    if "before" in load or "before" in streamed:  # --before: the same run, a second checkout
        after: dict[str, Any] = {}
        for c in CONCURRENCY:
            key = str(c)
            if key in load.get("chatbridge", {}) and key in load.get("before", {}):
                after[f"rps_c{c}"] = _paired(load["chatbridge"][key], load["before"][key], "rps", "ratio")
            if key in streamed.get("chatbridge", {}) and key in streamed.get("before", {}):
                after[f"stream_rps_c{c}"] = _paired(streamed["chatbridge"][key], streamed["before"][key], "rps", "ratio")
        if "chatbridge" in streams and "before" in streams:
            after["ttfc_ms_diff"] = _paired(streams["chatbridge"], streams["before"], "ttfc_ms", "diff")
        ratios["chatbridge_vs_before"] = after
    out["ratios"] = ratios

    header = raw.get("overhead_header") or []
    ordered = sorted(header)
    out["overhead_header_ms"] = {
        "n": len(ordered),
        "p50": median(ordered),
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else None,
    }
    out["floor"] = _floor(raw.get("floor"), out["throughput"])
    out["memory"] = raw.get("memory")
    out["growth"] = raw.get("growth")
    out["workers"] = raw.get("workers")
    out["redis"] = raw.get("redis")
    out["targets"] = _targets(out)
    return out


def _floor(raw: dict[str, list[dict[str, Any]]] | None, throughput: dict[str, Any]) -> dict[str, Any] | None:
    """The libraries' own CPU per request, and the most any gateway built on them could serve."""
    if not raw or not raw.get("server") or not raw.get("client"):
        return None
    server = median([r.get("cpu_ms_per_request") for r in raw["server"]])
    client = median([r.get("cpu_ms_per_request") for r in raw["client"]])
    if server is None or client is None:
        return None
    floor = server + client
    out: dict[str, Any] = {
        "uvicorn_cpu_ms": server, "aiohttp_client_cpu_ms": client, "floor_cpu_ms": floor,
        "ceiling_rps": 1000 / floor if floor else None, "runs": raw,
    }
    direct = (throughput.get("direct") or {}).get("64") or {}
    mine = (throughput.get("chatbridge") or {}).get("64") or {}
    if direct.get("rps") and out["ceiling_rps"]:
        out["ceiling_vs_direct"] = out["ceiling_rps"] / direct["rps"]
    if direct.get("cpu_ms_per_request") is not None:
        out["direct_cpu_ms"] = direct["cpu_ms_per_request"]
    if mine.get("cpu_ms_per_request") is not None:
        out["chatbridge_cpu_ms"] = mine["cpu_ms_per_request"]
        out["chatbridge_own_cpu_ms"] = mine["cpu_ms_per_request"] - floor
    return out


def _worst(ratios: dict[str, Any], prefix: str, levels: tuple[int, ...]) -> float | None:
    """The lowest of a ratio over several concurrency levels (None when none was measured)."""
    values = [ratios[f"{prefix}{c}"] for c in levels if ratios.get(f"{prefix}{c}") is not None]
    return min(values) if values else None


def _target(name: str, goal: str, measured: float | None, fmt: str, ok: bool | None, note: str = "") -> dict[str, Any]:
    return {
        "name": name, "goal": goal, "measured": measured,
        "shown": (fmt.format(measured) if measured is not None else "not measured"),
        "pass": ok, "note": note,
    }


def _targets(out: dict[str, Any]) -> list[dict[str, Any]]:
    cb = out["ratios"].get("chatbridge", {})
    vs_litellm = out["ratios"].get("chatbridge_vs_litellm", {})
    added = cb.get("added_p50_ms_c1")
    to_direct = _worst(cb, "rps_vs_direct_c", (32, 64))
    streamed_to_direct = _worst(cb, "stream_rps_vs_direct_c", (32, 64))
    added_ttfc = cb.get("added_ttfc_ms")
    to_litellm = vs_litellm.get("rps_c64")
    floor = out.get("floor") or {}
    ceiling = floor.get("ceiling_vs_direct")
    direct_note = (f"uvicorn + aiohttp alone, doing nothing else, reach at most {ceiling:.0%} of direct here "
                   "(see 'Where the CPU goes')" if ceiling is not None else "")
    memory = out.get("memory") or {}
    per_stream = memory.get("kib_per_stream")
    growth = out.get("growth") or {}
    late = growth.get("late_growth_kib")
    items = [
        _target("p50 added latency, concurrency 1", f"≤ {MAX_ADDED_P50_MS:g} ms", added, "{:.3f} ms",
                None if added is None else added <= MAX_ADDED_P50_MS),
        _target("throughput at concurrency 64 vs LiteLLM", f"≥ {MIN_VS_LITELLM:g}×", to_litellm, "{:.1f}×",
                None if to_litellm is None else to_litellm >= MIN_VS_LITELLM,
                "" if to_litellm is not None else "LiteLLM not measured: " + str(out.get("litellm", {}).get("note", ""))),
        _target("throughput at concurrency 32–64 vs direct (the lower)", f"≥ {MIN_VS_DIRECT:.0%}", to_direct, "{:.1%}",
                None if to_direct is None else to_direct >= MIN_VS_DIRECT, direct_note),
        _target("streamed throughput at concurrency 32–64 vs direct (the lower)", f"≥ {MIN_VS_DIRECT:.0%}",
                streamed_to_direct, "{:.1%}", None if streamed_to_direct is None else streamed_to_direct >= MIN_VS_DIRECT),
        _target("time to first chunk added, one stream at a time", f"≤ {MAX_ADDED_TTFC_MS:g} ms", added_ttfc, "{:+.2f} ms",
                None if added_ttfc is None else added_ttfc <= MAX_ADDED_TTFC_MS),
        _target(f"resident memory per open stream ({memory.get('opened', '?')} open)", f"≤ {MAX_KIB_PER_STREAM} KiB",
                per_stream, "{:.1f} KiB",
                None if per_stream is None else (per_stream <= MAX_KIB_PER_STREAM and memory.get("opened") == memory.get("streams"))),
        _target(f"RSS growth over {growth.get('requests', 0):,} requests (second half)",
                f"≤ {MAX_LATE_GROWTH_KIB} KiB", late, "{:+.0f} KiB",
                None if late is None else late <= MAX_LATE_GROWTH_KIB,
                f"total {growth['total_growth_kib']:+,} KiB from after warm-up" if growth.get("total_growth_kib") is not None else ""),
    ]
    return items


# -- markdown ------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = "{:.2f}") -> str:
    return "–" if value is None else spec.format(value)


def _verdict(ok: bool | None) -> str:
    return {True: "**met**", False: "**missed**", None: "n/a"}[ok]


def render_markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# chatbridge benchmark ({doc.get('mode', '?')} mode, {doc.get('runs', '?')} run(s), {doc.get('generated_at', '')})",
        "",
        f"Machine: {doc.get('machine', {}).get('summary', '?')}. {doc.get('setup', '')}",
        "",
        "## Targets",
        "",
        "| target | goal | measured | verdict | note |",
        "|---|---|---|---|---|",
    ]
    for t in doc.get("targets", []):
        lines.append(f"| {t['name']} | {t['goal']} | {t['shown']} | {_verdict(t['pass'])} | {t['note']} |")
    lines += [
        "",
        "## Non-streamed requests",
        "",
        "Medians over runs. `vs direct` is the per-run ratio of requests per second, then its median.",
        "",
        "| server | conc. | req/s | p50 ms | p99 ms | CPU ms/req | vs direct | vs minimal proxy | added p50 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target in TARGETS:
        rows = doc.get("throughput", {}).get(target)
        if not rows:
            continue
        ratios = doc.get("ratios", {}).get(target, {})
        for c, row in rows.items():
            lines.append(
                f"| {LABELS[target]} | {c} | {_fmt(row['rps'], '{:,.0f}')} | {_fmt(row['p50_ms'], '{:.3f}')} | "
                f"{_fmt(row['p99_ms'], '{:.2f}')} | {_fmt(row.get('cpu_ms_per_request'), '{:.3f}')} | "
                f"{_fmt(ratios.get(f'rps_vs_direct_c{c}'), '{:.1%}')} | {_fmt(ratios.get(f'rps_vs_floor_c{c}'), '{:.1%}')} | "
                f"{_fmt(ratios.get(f'added_p50_ms_c{c}'), '{:+.3f}')} | "
                f"{row['errors']} |"
            )
    vs = doc.get("ratios", {}).get("chatbridge_vs_litellm")
    if vs:
        parts = ", ".join(f"{k.replace('rps_c', 'concurrency ')}: {_fmt(v, '{:.1f}×')}" for k, v in vs.items() if k.startswith("rps"))
        lines += ["", f"chatbridge vs LiteLLM, requests per second (per-run ratio, median): {parts}."]
    header = doc.get("overhead_header_ms") or {}
    if header.get("n"):
        lines += ["", f"`x-chatbridge-overhead-ms` reported by the gateway at concurrency 1 ({header['n']} requests): "
                      f"p50 {_fmt(header['p50'], '{:.3f}')} ms, p99 {_fmt(header['p99'], '{:.3f}')} ms."]
    stream_rows = doc.get("stream_throughput") or {}
    if stream_rows:
        lines += [
            "",
            "## Streamed requests under load",
            "",
            "Closed loop, each request a whole streamed answer read to its end; medians over runs; ratios per run, "
            "then their median.",
            "",
            "| server | conc. | streams/s | p50 ms | CPU ms/stream | vs direct | vs minimal proxy | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for target in TARGETS:
            rows = stream_rows.get(target)
            if not rows:
                continue
            ratios = doc.get("ratios", {}).get(target, {})
            for c, row in rows.items():
                lines.append(
                    f"| {LABELS[target]} | {c} | {_fmt(row['rps'], '{:,.1f}')} | {_fmt(row['p50_ms'], '{:.2f}')} | "
                    f"{_fmt(row.get('cpu_ms_per_request'), '{:.3f}')} | {_fmt(ratios.get(f'stream_rps_vs_direct_c{c}'), '{:.1%}')} | "
                    f"{_fmt(ratios.get(f'stream_rps_vs_floor_c{c}'), '{:.1%}')} | {row['errors']} |"
                )
    before = doc.get("ratios", {}).get("chatbridge_vs_before")
    if before:
        lines += [
            "",
            "## Before and after (same run)",
            "",
            f"chatbridge ({doc.get('chatbridge', {}).get('commit') or 'this checkout'}) against "
            f"`--before {doc.get('before', {}).get('spec', '?')}` ({doc.get('before', {}).get('commit') or '?'}), "
            "per-run ratios of requests per second, then their median (above 1: this checkout is faster).",
            "",
            "| conc. | non-streamed after/before | streamed after/before |",
            "|---:|---:|---:|",
        ]
        for c in CONCURRENCY:
            lines.append(f"| {c} | {_fmt(before.get(f'rps_c{c}'), '{:.2f}×')} | {_fmt(before.get(f'stream_rps_c{c}'), '{:.2f}×')} |")
        if before.get("ttfc_ms_diff") is not None:
            lines += ["", f"Time to first chunk, after minus before: {_fmt(before['ttfc_ms_diff'], '{:+.2f}')} ms."]
    floor = doc.get("floor")
    if floor:
        own = floor.get("chatbridge_own_cpu_ms")
        lines += [
            "",
            "## Where the CPU goes",
            "",
            "Server CPU per non-streamed request at concurrency 64, on the same core (medians). A proxied request "
            "costs at least what uvicorn spends serving any request plus what aiohttp's client spends making one; "
            "that sum is the floor under every gateway built on these two libraries.",
            "",
            "| what | CPU ms/req | most req/s on one core |",
            "|---|---:|---:|",
            f"| direct (emulator: aiohttp server, cached answer) | {_fmt(floor.get('direct_cpu_ms'), '{:.3f}')} | "
            f"{_fmt(1000 / floor['direct_cpu_ms'] if floor.get('direct_cpu_ms') else None, '{:,.0f}')} |",
            f"| uvicorn alone, constant answer (bench/floor.py) | {_fmt(floor['uvicorn_cpu_ms'], '{:.3f}')} | "
            f"{_fmt(1000 / floor['uvicorn_cpu_ms'] if floor['uvicorn_cpu_ms'] else None, '{:,.0f}')} |",
            f"| aiohttp client alone, one request to the emulator | {_fmt(floor['aiohttp_client_cpu_ms'], '{:.3f}')} | "
            f"{_fmt(1000 / floor['aiohttp_client_cpu_ms'] if floor['aiohttp_client_cpu_ms'] else None, '{:,.0f}')} |",
            f"| **floor: the two together** | **{_fmt(floor['floor_cpu_ms'], '{:.3f}')}** | "
            f"**{_fmt(floor['ceiling_rps'], '{:,.0f}')}** ({_fmt(floor.get('ceiling_vs_direct'), '{:.0%}')} of direct) |",
            f"| chatbridge → emulator | {_fmt(floor.get('chatbridge_cpu_ms'), '{:.3f}')} | "
            f"{_fmt(1000 / floor['chatbridge_cpu_ms'] if floor.get('chatbridge_cpu_ms') else None, '{:,.0f}')} |",
            f"| chatbridge's own work (the difference) | {_fmt(own, '{:.3f}')} | |",
        ]
    streams = doc.get("streams") or {}
    if streams:
        lines += [
            "",
            "## Streams",
            "",
            "One stream at a time; time to first chunk (TTFC) from sending the request to the first `data:` event; "
            "chunks/s = events in the stream / whole stream time.",
            "",
            "| server | chunks | TTFC ms | added TTFC ms | chunks/s | vs direct | errors |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for target in TARGETS:
            row = streams.get(target)
            if not row:
                continue
            ratios = doc.get("ratios", {}).get(target, {})
            lines.append(
                f"| {LABELS[target]} | {row['chunks']} | {_fmt(row['ttfc_ms'], '{:.2f}')} | "
                f"{_fmt(ratios.get('added_ttfc_ms'), '{:+.2f}')} | {_fmt(row['chunks_per_s'], '{:,.0f}')} | "
                f"{_fmt(ratios.get('chunks_per_s_vs_direct'), '{:.1%}')} | {row['errors']} |"
            )
    memory = doc.get("memory")
    if memory:
        lines += [
            "",
            "## Memory",
            "",
            f"Open streams: {memory['opened']} of {memory['streams']} held open at once (each had sent its first chunk). "
            f"Gateway RSS {memory['rss_before_kib']:,} KiB idle after warm-up, {memory['rss_during_kib']:,} KiB with them open: "
            f"**{_fmt(memory['kib_per_stream'], '{:.1f}')} KiB per stream**.",
        ]
    growth = doc.get("growth")
    if growth:
        lines += [
            "",
            f"Growth: {growth['requests']:,} requests ({growth['mix']}) after {growth['warmup_requests']:,} warm-up requests; "
            f"RSS {growth['series'][0][1]:,} → {growth['series'][-1][1]:,} KiB "
            f"({growth['total_growth_kib']:+,} KiB; {growth['late_growth_kib']:+,} KiB over the second half).",
        ]
    workers = doc.get("workers")
    if workers:
        lines += [
            "",
            "## Worker processes",
            "",
            f"{workers['note']}",
            "",
            "| workers | req/s (concurrency 64) | p50 ms | p99 ms |",
            "|---:|---:|---:|---:|",
        ]
        for n, row in workers["results"].items():
            lines.append(f"| {n} | {_fmt(row['rps'], '{:,.0f}')} | {_fmt(row['p50_ms'], '{:.2f}')} | {_fmt(row['p99_ms'], '{:.2f}')} |")
    if doc.get("redis"):
        from bench.redis_state import render_markdown as redis_markdown

        lines += redis_markdown(doc["redis"])
    notes = doc.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


# -- chart ---------------------------------------------------------------------------------------


def render_png(doc: dict[str, Any], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    colours = {"direct": "#7f7f7f", "floor-proxy": "#bcbd22", "chatbridge": "#1f77b4", "before": "#9467bd",
               "litellm": "#d62728", "chatbridge-k2think": "#2ca02c"}
    present = [t for t in TARGETS if t in doc.get("throughput", {})]

    ax = axes[0][0]
    width = 0.8 / max(1, len(present))
    for i, target in enumerate(present):
        rows = doc["throughput"][target]
        xs = [j + i * width for j in range(len(CONCURRENCY))]
        ys = [(rows.get(str(c)) or {}).get("rps") or 0 for c in CONCURRENCY]
        ax.bar(xs, ys, width, label=LABELS[target], color=colours[target])
    ax.set_xticks([j + width * (len(present) - 1) / 2 for j in range(len(CONCURRENCY))])
    ax.set_xticklabels([f"concurrency {c}" for c in CONCURRENCY])
    ax.set_yscale("log")
    top = max([(r.get("rps") or 1) for t in present for r in doc["throughput"][t].values()] + [10])
    ax.set_ylim(top=top * 8)
    ax.set_ylabel("requests per second (log scale)")
    ax.set_title("Non-streamed throughput (one server process)")
    ax.legend(fontsize=8, loc="upper left", ncol=2)

    ax = axes[0][1]
    for i, target in enumerate(present):
        rows = doc["throughput"][target]
        p50 = [(rows.get(str(c)) or {}).get("p50_ms") or 0 for c in CONCURRENCY]
        p99 = [(rows.get(str(c)) or {}).get("p99_ms") or 0 for c in CONCURRENCY]
        xs = [j + i * width for j in range(len(CONCURRENCY))]
        ax.bar(xs, p99, width, color=colours[target], alpha=0.35)
        ax.bar(xs, p50, width, color=colours[target], label=LABELS[target])
    ax.set_xticks([j + width * (len(present) - 1) / 2 for j in range(len(CONCURRENCY))])
    ax.set_xticklabels([f"concurrency {c}" for c in CONCURRENCY])
    ax.set_yscale("log")
    ax.set_ylabel("latency ms (solid p50, pale p99; log scale)")
    ax.set_title("Latency")

    ax = axes[1][0]
    streams = doc.get("streams") or {}
    names = [t for t in TARGETS if t in streams]
    ax.bar(range(len(names)), [streams[t]["chunks_per_s"] or 0 for t in names], color=[colours[t] for t in names])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([LABELS[t].replace(" → ", "\n→ ") for t in names], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("chunks per second (log scale)")
    for i, t in enumerate(names):
        ttfc = streams[t]["ttfc_ms"]
        ax.annotate(f"TTFC {ttfc:.1f} ms" if ttfc is not None else "", (i, streams[t]["chunks_per_s"] or 1),
                    ha="center", va="bottom", fontsize=8)
    ax.set_title(f"Streams of {streams.get('direct', {}).get('chunks', '?')} events")

    ax = axes[1][1]
    growth = doc.get("growth")
    if growth and growth.get("series"):
        xs = [p[0] for p in growth["series"]]
        ys = [p[1] / 1024 for p in growth["series"]]
        ax.plot(xs, ys, marker="o", color=colours["chatbridge"])
        ax.set_xlabel("requests served after warm-up")
        ax.set_ylabel("gateway RSS (MiB)")
        low = min(ys)
        ax.set_ylim(low * 0.9, max(ys) * 1.1)
    memory = doc.get("memory") or {}
    title = "RSS across requests"
    if memory.get("kib_per_stream") is not None:
        title += f"; {memory['kib_per_stream']:.1f} KiB per open stream ({memory['opened']} open)"
    ax.set_title(title, fontsize=10)

    fig.suptitle(f"chatbridge benchmark: {doc.get('machine', {}).get('summary', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
