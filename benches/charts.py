"""SVG charts for a benchmark report (no plotting library: plain SVG text).

throughput.svg: ops/s against the number of clients, one panel per workload, both
systems on the same axes. latency.svg: p50, p90, p99 and p99.9 of every row, one panel
per workload and concurrency, both systems side by side on a log scale.
"""
import math
import os

COLORS = {"ringkv": "#1f77b4", "etcd": "#d62728"}
PANEL_W, PANEL_H = 320, 220
MARGIN_L, MARGIN_B, MARGIN_T = 60, 40, 30
COLS = 3
# Panels in the suite's order; other workloads after these.
ORDER = ["put", "range-l", "range-s", "mixed-90", "mixed-50", "hot-key"]


def _rank(workload):
    return ORDER.index(workload) if workload in ORDER else len(ORDER)


def _esc(t):
    return str(t).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fmt(v):
    if v >= 10_000:
        return f"{v / 1000:.0f}k"
    if v >= 1000:
        return f"{v / 1000:.1f}k"
    if v >= 10:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _svg(panels, title, draw):
    """Lays out `panels` in a grid and calls draw(panel, x0, y0) for each."""
    rows = max(1, math.ceil(len(panels) / COLS))
    w = COLS * (PANEL_W + MARGIN_L) + 20
    h = rows * (PANEL_H + MARGIN_B + MARGIN_T) + 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="10" y="20" font-size="14" font-weight="bold">{_esc(title)}</text>']
    for i, (name, sysname) in enumerate([("ringkv", "ringkv"), ("etcd", "etcd 3.4")]):
        out.append(f'<rect x="{w - 200 + i * 90}" y="10" width="12" height="12" fill="{COLORS[name]}"/>'
                   f'<text x="{w - 184 + i * 90}" y="20">{sysname}</text>')
    for i, p in enumerate(panels):
        x0 = 10 + (i % COLS) * (PANEL_W + MARGIN_L) + MARGIN_L
        y0 = 40 + (i // COLS) * (PANEL_H + MARGIN_B + MARGIN_T) + MARGIN_T
        out.append(f'<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" '
                   f'fill="none" stroke="#999"/>')
        out.extend(draw(p, x0, y0))
    out.append("</svg>")
    return "\n".join(out)


def _throughput(rows, systems):
    by_workload = {}
    for r in rows:
        by_workload.setdefault(r["workload"], []).append(r)
    panels = sorted(by_workload.items(), key=lambda p: _rank(p[0]))

    def draw(panel, x0, y0):
        w, rs = panel
        clients = sorted({r["clients"] for r in rs})
        top = max(r["ops_per_sec"] for r in rs) * 1.15 or 1
        out = [f'<text x="{x0}" y="{y0 - 8}" font-weight="bold">{_esc(w)}: ops/s by clients</text>']
        for k in range(5):
            v = top * k / 4
            y = y0 + PANEL_H - PANEL_H * k / 4
            out.append(f'<line x1="{x0}" y1="{y}" x2="{x0 + PANEL_W}" y2="{y}" stroke="#eee"/>'
                       f'<text x="{x0 - 4}" y="{y + 4}" text-anchor="end">{_fmt(v)}</text>')

        def xpos(c):
            # Clients on a log scale (1 ... 1000), evenly spaced when only a few values.
            if len(clients) == 1:
                return x0 + PANEL_W / 2
            lo, hi = math.log10(clients[0]), math.log10(clients[-1])
            return x0 + 30 + (PANEL_W - 60) * (math.log10(c) - lo) / ((hi - lo) or 1)

        for c in clients:
            out.append(f'<text x="{xpos(c)}" y="{y0 + PANEL_H + 14}" text-anchor="middle">{c}</text>')
        out.append(f'<text x="{x0 + PANEL_W / 2}" y="{y0 + PANEL_H + 30}" text-anchor="middle">'
                   f'clients (conns: 1, 8 or 100)</text>')
        for s in systems:
            pts = sorted((r["clients"], r["ops_per_sec"]) for r in rs if r["system"] == s)
            xy = [(xpos(c), y0 + PANEL_H - PANEL_H * v / top) for c, v in pts]
            if len(xy) > 1:
                out.append('<polyline fill="none" stroke-width="2" stroke="{}" points="{}"/>'.format(
                    COLORS.get(s, "#333"), " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)))
            for (x, y), (_, v) in zip(xy, pts):
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLORS.get(s, "#333")}"/>'
                           f'<text x="{x + 5:.1f}" y="{y - 5:.1f}" fill="{COLORS.get(s, "#333")}">{_fmt(v)}</text>')
        return out

    return _svg(panels, "Throughput against concurrency (median of the runs)", draw)


def _latency(rows, systems):
    keys = []
    for r in sorted(rows, key=lambda r: (_rank(r["workload"]), r["clients"])):
        k = (r["workload"], r["conns"], r["clients"])
        if k not in keys:
            keys.append(k)
    pcts = [("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"), ("p999_ms", "p99.9")]
    panels = []
    for k in keys:
        rs = {r["system"]: r for r in rows if (r["workload"], r["conns"], r["clients"]) == k}
        panels.append((k, rs))

    def draw(panel, x0, y0):
        (w, conns, clients), rs = panel
        vals = [rs[s][p] for s in rs for p, _ in pcts if rs[s].get(p)]
        lo = 10 ** math.floor(math.log10(min(vals))) if vals else 0.01
        hi = 10 ** math.ceil(math.log10(max(vals))) if vals else 1
        if hi <= lo:
            hi = lo * 10

        def ypos(v):
            return y0 + PANEL_H - PANEL_H * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

        out = [f'<text x="{x0}" y="{y0 - 8}" font-weight="bold">{_esc(w)} {conns}/{clients}: latency ms (log)</text>']
        d = lo
        while d <= hi * 1.0001:
            y = ypos(d)
            out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + PANEL_W}" y2="{y:.1f}" stroke="#eee"/>'
                       f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{d:g}</text>')
            d *= 10
        group = PANEL_W / len(pcts)
        bar = group / (len(systems) + 1)
        for i, (p, name) in enumerate(pcts):
            gx = x0 + i * group
            out.append(f'<text x="{gx + group / 2:.1f}" y="{y0 + PANEL_H + 14}" text-anchor="middle">{name}</text>')
            for j, s in enumerate(systems):
                v = rs.get(s, {}).get(p)
                if not v:
                    continue
                x = gx + bar / 2 + j * bar
                y = ypos(v)
                out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar * 0.9:.1f}" '
                           f'height="{y0 + PANEL_H - y:.1f}" fill="{COLORS.get(s, "#333")}"/>'
                           f'<text x="{x + bar * 0.45:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                           f'font-size="9">{_fmt(v)}</text>')
        return out

    return _svg(panels, "Latency percentiles, ms (median of the runs)", draw)


def write(out_dir, rows, systems):
    """Writes throughput.svg and latency.svg into out_dir."""
    with open(os.path.join(out_dir, "throughput.svg"), "w") as f:
        f.write(_throughput(rows, systems))
    with open(os.path.join(out_dir, "latency.svg"), "w") as f:
        f.write(_latency(rows, systems))
