"""The compiled plan as a diagram: inputs -> tables -> aggregation -> body -> heads, with shapes and parameters.

`plan_figure(plan, parameters)` takes the plan as plan.json holds it and the parameter count of each part
(`part_parameters(model)`), and lays out one column of boxes per stage with arrows along the data flow.
"""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from specc.report_plots import PALETTE

COLUMNS = ("inputs", "embeddings", "aggregation", "body", "heads")
COLORS = dict(zip(COLUMNS, ("#e8eef7", "#eaf4ec", "#fbefe4", "#f3e9f5", "#fbf3dc")))
EDGES = dict(zip(COLUMNS, (PALETTE[0], PALETTE[2], PALETTE[1], PALETTE[4], PALETTE[5])))


def part_parameters(model) -> dict:
    """Trainable parameters of each part of a built specc.Model, by the names the diagram uses."""
    count = lambda module: sum(p.numel() for p in module.parameters()) if module is not None else 0  # noqa: E731
    inputs = model.inputs
    mask = getattr(model, "mask_embedding", None)
    parts = {"continuous": count(getattr(inputs, "cont", None)),
             "body": count(model.body) + (mask.numel() if mask is not None else 0),   # the mask token goes in
             "discriminator": count(getattr(model, "discriminator", None)),
             "aggregation": count(getattr(inputs, "norm", None)) + count(getattr(inputs, "projection", None))}
    parts.update({f"head:{name}": count(head) for name, head in model.scalar_heads.items()})
    if model.next_item is not None:
        parts[f"head:{model.plan.next_item.name}"] = count(model.next_item)
    return parts


def _shape(sequential: bool, width) -> str:
    return f"[B, L, {width}]" if sequential else f"[B, {width}]"


def _boxes(plan: dict, parameters: dict) -> dict[str, list[tuple[str, str, list[str]]]]:
    """Per column, boxes of (id, title, lines)."""
    i, body, masking = plan["inputs"], plan["body"], plan["masking"]
    L = i["max_sequence_length"]
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    for f in i["features"]:
        shape = f"[B, {L}]" if f["sequential"] else "[B]"
        cols["inputs"].append((f"in:{f['column']}", f["column"], [f"{f['role']} {shape}"]))
    for t in i["tables"]:
        cols["embeddings"].append((f"table:{t['name']}", t["name"],
                                   [f"{t['rows']:,} x {t['dim']}", f"{t['rows'] * t['dim']:,} params"]))
    if i["continuous"]:
        c = i["continuous"]
        cols["embeddings"].append(("continuous", f"continuous: {c['kind']}",
                                   [f"{len(c['columns'])} column(s) -> {c['dim']} each",
                                    f"{parameters.get('continuous', 0):,} params"]))
    parts = " + ".join(str(w) for w in i["part_widths"])
    lines = [f"[{parts}] -> {i['aggregated_width']}"] + (["layer norm"] if i["layer_norm"] else [])
    if i["projection"]:
        p = i["projection"]
        lines.append(f"{p['kind']} {p['input_width']} -> {' -> '.join(map(str, p['dims']))}")
    lines += [_shape(True, i["output_width"]), f"{parameters.get('aggregation', 0):,} params"]
    cols["aggregation"].append(("aggregation", f"aggregation: {i['aggregation']}", lines))
    arch = f"{body['kind']} {body['architecture']}" if body.get("architecture") else body["kind"]
    shape_line = f"d_model {body['input_width']}" + (f", {body['n_head']} heads" if body.get("n_head") else "") \
        + (f", {body['n_layer']} layers" if body.get("n_layer") else "")
    sees = "sees the past only" if body["causal"] else "sees the whole sequence"
    cols["body"].append(("body", arch, [shape_line, f"masking {masking['kind']}; {sees}",
                                        _shape(True, body["output_width"]),
                                        f"{parameters.get('body', 0):,} params"]))
    for t in plan["tasks"]:
        if t["kind"] == "next_item":
            head = [t["kind"], f"{t['n_items']:,} items" + (f", table {t['table']}" if t["table"] else ""),
                    f"loss {t['loss']['kind']}", f"top-k of [B, {t['n_items']:,}] scores"]
        else:
            head = [t["kind"], f"summary {t['summary']} -> [B]", f"target {t['target']}"]
        own = parameters.get("head:" + t["name"], 0)
        cols["heads"].append((f"head:{t['name']}", t["name"],
                              head + [f"{own:,} params" if own or not t.get("table") else "weights tied"]))
    if masking["kind"] == "rtd":
        cols["heads"].append(("head:discriminator", "rtd discriminator",
                              ["replaced-token detection", f"weight {masking['discriminator_weight']:g}",
                               f"{parameters.get('discriminator', 0):,} params"]))
    return cols


def _edges(plan: dict) -> list[tuple[str, str]]:
    i = plan["inputs"]
    edges = []
    for f in i["features"]:
        target = f"table:{f['table']}" if f.get("table") else "continuous"
        edges.append((f"in:{f['column']}", target))
    edges += [(f"table:{t['name']}", "aggregation") for t in i["tables"]]
    edges += [("continuous", "aggregation")] if i["continuous"] else []
    edges.append(("aggregation", "body"))
    edges += [("body", f"head:{t['name']}") for t in plan["tasks"]] + [("body", "head:discriminator")]
    return edges


def plan_figure(plan: dict, parameters: dict) -> Figure:
    cols = _boxes(plan, parameters)
    title_h, line_h, pad, gap, box_w, col_gap = 0.32, 0.235, 0.2, 0.3, 3.1, 0.8
    heights = {c: [pad * 2 + title_h + line_h * len(lines) for _, _, lines in boxes] for c, boxes in cols.items()}
    total_h = max(sum(h) + gap * (len(h) - 1) for h in heights.values())
    width = len(COLUMNS) * box_w + (len(COLUMNS) - 1) * col_gap
    fig = Figure(figsize=(width * 0.75, (total_h + 1.2) * 0.75), layout="constrained")
    ax = fig.add_subplot()
    ax.set(xlim=(-0.1, width + 0.1), ylim=(-0.2, total_h + 0.9))
    ax.axis("off")
    anchors = {}
    for n, column in enumerate(COLUMNS):
        x = n * (box_w + col_gap)
        ax.text(x + box_w / 2, total_h + 0.55, column, ha="center", fontsize=11, weight="bold", color=EDGES[column])
        y = total_h - (total_h - sum(heights[column]) - gap * (len(heights[column]) - 1)) / 2
        for (box_id, title, lines), h in zip(cols[column], heights[column]):
            ax.add_patch(FancyBboxPatch((x, y - h), box_w, h, boxstyle="round,pad=0,rounding_size=0.12",
                                        fc=COLORS[column], ec=EDGES[column], lw=1.4))
            ax.text(x + 0.15, y - pad, title, va="top", fontsize=9, weight="bold")
            ax.text(x + 0.15, y - pad - title_h, "\n".join(lines), va="top", fontsize=8, color="#333",
                    linespacing=1.5)
            anchors[box_id] = (x, x + box_w, y - h / 2)
            y -= h + gap
    for src, dst in _edges(plan):
        if src in anchors and dst in anchors:
            ax.annotate("", xy=(anchors[dst][0], anchors[dst][2]), xytext=(anchors[src][1], anchors[src][2]),
                        arrowprops={"arrowstyle": "-|>", "color": "#666", "lw": 1.1, "shrinkA": 2, "shrinkB": 2,
                                    "connectionstyle": "arc3,rad=0"})
    total = f"{plan['parameters']:,} parameters"
    ax.set_title(f"plan of {plan['name']!r}: {total}", fontsize=12, weight="bold", loc="left")
    return fig
