"""`specc report RUN_DIR [--out DIR] [--data PATH] [--k 10]`: a self-contained HTML page of a run, with pictures.

    DIR/report.html     the page, its PNGs embedded (base64), so it can be mailed or attached alone
    DIR/curves.png      training loss and validation metrics by epoch (log.jsonl)
    DIR/throughput.png  training sessions/s and seconds per epoch
    DIR/plan.png        the compiled plan as a diagram (plan.json and the model's parameter counts)
    DIR/popularity.png  next-item runs with --data: the popularity of recommended items against the data's,
                        and the catalog coverage (skipped with a note otherwise)
DIR defaults to RUN_DIR/report.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from specc.checkpoint import RunError
from specc.errors import UserError
from specc.lock import run_directory_around


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: not JSON lines ({exc})") from None


def _recommended_counts(model, run_dir, data: str, k: int):
    """How often each item is in the top k after each sequence of `data`, and how often it occurs there."""
    import numpy as np

    from specc.checkpoint import run_schema
    from specc.data import open_dataset
    n_items = model.plan.next_item.n_items
    dataset = open_dataset(data, run_schema(run_dir), model.input_columns, item_column=model.sequence_column,
                           max_length=model.max_length, min_length=1)
    counts = np.zeros(n_items, dtype=np.int64)
    for batch in dataset.batches(512, shuffle=False):
        _, ids = model.recommend(batch, k=min(k, n_items - 1))
        counts += np.bincount(ids[ids > 0].numpy(), minlength=n_items)
    return dataset.item_counts(n_items).numpy(), counts


def _figures(run_dir: Path, data: str | None, k: int) -> tuple[dict, list[str]]:
    import matplotlib

    import specc
    from specc import report_plots as plots
    from specc.report_plan import part_parameters, plan_figure
    epochs = [r for r in _records(run_dir / "log.jsonl") if "epoch" in r]
    model = specc.load(run_dir, device="cpu")
    notes = []
    with matplotlib.rc_context(plots.STYLE):
        figures = {"plan": plan_figure(model.plan.to_dict(), part_parameters(model))}
        if epochs:
            figures["curves"] = plots.curves(epochs)
            figures["throughput"] = plots.throughput(epochs)
        else:
            notes.append("log.jsonl has no finished epoch: no training curves")
        if model.plan.next_item is None:
            notes.append("no next_item task: no popularity or coverage plot")
        elif data is None:
            notes.append("popularity and coverage of recommendations: pass --data (e.g. the evaluation parquet)")
        else:
            figures["popularity"] = plots.popularity(*_recommended_counts(model, run_dir, data, k), k=k)
    return figures, notes


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _page(run_dir: Path, images: dict[str, bytes], notes: list[str]) -> str:
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>" if isinstance(v, float) else
                   f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in metrics.items())
    titles = {"curves": "Training", "throughput": "Throughput", "plan": "Compiled plan",
              "popularity": "What it recommends"}
    sections = "".join(f"<h2>{titles[name]}</h2><img alt='{name}' src='data:image/png;base64,"
                       f"{base64.b64encode(png).decode()}'>" for name, png in images.items())
    notes_html = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>specc report: {html.escape(run_dir.name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;color:#222;padding:0 1em}}
img{{max-width:100%;border:1px solid #eee;border-radius:6px}} table{{border-collapse:collapse}}
td{{padding:2px 14px 2px 0;font-variant-numeric:tabular-nums}} .note{{color:#777}}</style></head>
<body><h1>specc run <code>{html.escape(str(run_dir))}</code></h1>
<h2>Final metrics</h2><table>{rows}</table>{notes_html}{sections}</body></html>
"""


def report(run_dir, out=None, data: str | None = None, k: int = 10) -> str:
    """Write the report of `run_dir` (see the module docstring); returns a one-line summary."""
    run_dir = Path(run_dir)
    if not (run_dir / "plan.json").is_file():
        raise RunError(f"{run_dir} is not a run directory (no plan.json); train one with specc train")
    owner = run_directory_around(out) if out else None
    if owner is not None and owner != run_dir.resolve():
        raise UserError(f"--out {out} is inside another run directory, {owner}; only its training writes there "
                        f"(the report of {run_dir} goes to {run_dir / 'report'} by default)")
    out = Path(out) if out else run_dir / "report"
    figures, notes = _figures(run_dir, data, k)
    out.mkdir(parents=True, exist_ok=True)
    images = {name: _png(figure) for name, figure in figures.items()}
    for name, png in images.items():
        (out / f"{name}.png").write_bytes(png)
    (out / "report.html").write_text(_page(run_dir, images, notes))
    return f"wrote {out / 'report.html'} ({', '.join(f'{n}.png' for n in images)})"
