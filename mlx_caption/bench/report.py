"""Results files: the JSON, a markdown report and a PNG chart."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# The targets the project set itself on a 2-core CPU: the key in the results, ">=" (met at or
# above the target) or "<=" (at or below), the target, and what it measures.
_GOAL_TABLE = """
encoder.min_ratio                   >= 1.3   encoder MLX / torch, lowest over every zoo shape and batch
encoder.ratio                       >= 1.2   encoder MLX / torch, ViT-B/32 batch 32
encoder.peak_row.mlx_peak_fraction  >= 0.75  ViT-B/16 batch 32 / float32 matmul peak
encoder.mlx_peak_fraction           >= 0.6   ViT-B/32 batch 32 / float32 matmul peak
e2e.ratio                           >= 1.3   end to end (encode + beam-3, 20 tokens) MLX / bridge
decode.kv_cache_speedup             >= 3.0   KV cache / recompute, 20 tokens
train.compile_speedup               >= 1.2   compiled / uncompiled training step
torch.min_ratio                     >= 1.2   training step MLX / torch, frozen-cached, lowest over batches
torch.finetune.ratio                >= 1.0   fine-tuning ViT-B/32 end to end, MLX / torch
memory.fractions.16                 <= 0.6   fine-tune peak memory, checkpointing / not, batch 16
memory.fractions.32                 <= 0.6   fine-tune peak memory, checkpointing / not, batch 32
captioners.ratio                    >= 1.5   pretrained captioner (BLIP-base, batch 8, beam 3, 20 tokens) MLX / transformers
captioners.min_ratio                >= 1.5   every pretrained captioner (batch 8, beam 3, 20 tokens) MLX / transformers, lowest
demo.min_pair_score                 >= 0.9   demo pair recall and precision at 1,400 steps, lowest seed
"""
# (key, what, target, "min" | "max")
GOALS = tuple(
    (key, what, float(target), "min" if op == ">=" else "max")
    for key, op, target, what in (
        line.split(maxsplit=3) for line in _GOAL_TABLE.strip().splitlines()
    )
)

# Goals with a measured ceiling: the best value the run shows to be possible on its machine
# (an encoder ratio where MLX ran at its own matmul peak). A target above it is out of reach
# there, whatever the code does.
CEILINGS = {
    "encoder.min_ratio": "encoder.min_ratio_ceiling",
    "encoder.ratio": "encoder.ratio_ceiling",
}
CEILING_NOTE = (
    "Ceiling here: the best value this machine allows, where the run measures one. An encoder "
    "ratio cannot pass torch's time over the time MLX would take at its own float32 matmul "
    "peak (the encoder's FLOPs are all matmuls)."
)


def lookup(results: dict[str, Any], dotted: str) -> Any:
    """``results["a"]["b"]`` for ``"a.b"``; None when missing."""
    node: Any = results
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with the measured value, whether it is met (None when not measured) and,
    where the run measures one (:data:`CEILINGS`), its ceiling and whether the target lies
    within it."""
    out = []
    for key, what, target, kind in GOALS:
        value = lookup(results, key)
        goal = {"key": key, "what": what, "value": value, "goal": target, "kind": kind}
        goal["met"] = _meets(value, target, kind)
        if key in CEILINGS:
            goal["ceiling"] = lookup(results, CEILINGS[key])
            goal["reachable"] = _meets(goal["ceiling"], target, kind)
        out.append(goal)
    return out


def _meets(value: Any, target: float, kind: str) -> bool | None:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return bool(value >= target) if kind == "min" else bool(value <= target)


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_f(c) for c in row) + " |" for row in rows]
    return lines + [""]


# The one-row tables: header -> key in the section's results.
E2E_COLUMNS = {
    "batch": "batch",
    "MLX captions/s": "mlx_captions_per_s",
    "bridge captions/s": "bridge_captions_per_s",
    "MLX / bridge": "ratio",
    "same captions": "same_captions",
}
DECODE_COLUMNS = {
    "KV cache tok/s": "kv_cache_tokens_per_s",
    "recompute tok/s": "recompute_tokens_per_s",
    "speedup": "kv_cache_speedup",
    "generate tok/s": "library_tokens_per_s",
    "same tokens": "same_tokens",
}
DATA_COLUMNS = {
    "images": "images",
    "source px": "source_px",
    "stream img/s": "stream_images_per_s",
    "Pillow exact img/s": "pillow_exact_images_per_s",
    "Pillow bilinear img/s": "pillow_bilinear_images_per_s",
}


def _one_row_table(section: dict[str, Any], columns: dict[str, str]) -> list[str]:
    """A one-row table of a section's figures: ``columns`` maps each header to its key."""
    return _table(list(columns), [[section.get(key) for key in columns.values()]])


def _header(results: dict[str, Any]) -> list[str]:
    sysinfo = results.get("system", {})
    v = sysinfo.get("versions", {})
    blas = sysinfo.get("blas", {})
    lines = [
        "# mlx-caption benchmark: pure MLX against PyTorch",
        "",
        f"- when: {sysinfo.get('time')}, {results.get('run', 'full')} run, "
        f"{results.get('elapsed_s', 0):.0f} s",
        f"- device: {sysinfo.get('device')} · CPU: {sysinfo.get('cpu_model')} "
        f"({sysinfo.get('cpu_count')} cores) · {sysinfo.get('platform')}",
        f"- MLX {v.get('mlx')} · torch {v.get('torch')} · transformers {v.get('transformers')}",
        f"- BLAS for MLX: {blas.get('loaded') or blas.get('reason')} · torch's BLAS: "
        f"{'its own (libtorch_cpu loaded first)' if blas.get('torch_own') else 'not checked'}"
        f" · malloc (both sides, one process): {sysinfo.get('malloc', 'glibc defaults')}",
        f"- threads: torch {sysinfo.get('threads', {}).get('torch')}; "
        f"load average at start {sysinfo.get('load_average')}, at end {results.get('load_end')}",
        "",
        *(
            f"- section `{name}` taken from the {m.get('run')} run of {m.get('time')} "
            f"(load average at start {m.get('load_average')}, at end {m.get('load_end')})"
            for name, m in results.get("merged", {}).items()
        ),
        "",
        "Every figure is the median of several timed repeats after warm-up; the MLX and torch",
        "sides (and the matmul peak) are timed in alternation, so their ratios hold even on a",
        "busy machine where absolute numbers move.",
        "",
        "## Goals",
        "",
    ] + _table(
        ["goal", "measured", "target", "met", "ceiling here"],
        [
            [
                g["what"],
                g["value"],
                f"{'>=' if g.get('kind') != 'max' else '<='} {g['goal']}",
                g["met"],
                g.get("ceiling"),
            ]
            for g in results.get("goals", [])
        ],
    )
    return lines + [CEILING_NOTE, ""]


def _encoder_md(enc: dict[str, Any]) -> list[str]:
    lines = ["## Encoder (float32, random weights shared by both frameworks)", ""]
    columns = {
        "model": "model", "shape": "shape", "batch": "batch", "MLX img/s": "mlx_images_per_s",
        "torch img/s": "bridge_images_per_s", "MLX / torch": "ratio", "MLX GFLOP/s": "mlx_gflops",
        "MLX % peak": "mlx_peak_fraction", "torch % peak": "bridge_peak_fraction",
        "ratio at MLX's peak": "ratio_ceiling", "matmul peak GFLOP/s": "peak_gflops",
    }  # fmt: skip
    percent = {"mlx_peak_fraction", "bridge_peak_fraction"}
    rows = [
        [100 * r[k] if k in percent and k in r else r.get(k) for k in columns.values()]
        for r in enc.get("rows", [])
    ]
    lines += _table(list(columns), rows)
    lines += [
        "torch: the family's transformers model (SDPA attention, inference mode, every core) and "
        "its output copied into MLX (the PT bridge).",
        "",
    ]
    notes = []
    for h in enc.get("half", []):
        note = (
            f"Half precision ({h['dtype']}): {h['skipped']}."
            if "skipped" in h
            else f"Half precision ({h['dtype']}, {h['model']}, batch {h['batch']}): MLX "
            f"{_f(h['mlx_images_per_s'])} img/s, {_f(h['speedup'])}x its float32; torch "
            f"{_f(h.get('torch_images_per_s'))} img/s; MLX / torch {_f(h.get('ratio'))}."
        )
        if note not in notes:
            notes.append(note)
    return lines + [line for note in notes for line in (note, "")]


def _e2e_md(e2e: dict[str, Any]) -> list[str]:
    title = f"## End to end: encode + beam-{e2e['num_beams']} decoding of {e2e['tokens']} tokens"
    return [title, ""] + _one_row_table(
        e2e,
        E2E_COLUMNS,
    )


def _decode_md(dec: dict[str, Any]) -> list[str]:
    return [
        f"## Decoding: KV cache against recomputing the prefix ({dec['length']} tokens)",
        "",
        f"Greedy over {dec['rows']} rows, both with a compiled step like `generate`'s "
        f"(uncompiled: {_f(dec.get('kv_cache_speedup_uncompiled'))}x); `generate` "
        "itself for reference.",
        "",
    ] + _one_row_table(
        dec,
        DECODE_COLUMNS,
    )


def _train_md(tr: dict[str, Any]) -> list[str]:
    lines = [f"## Training (batch {tr['batch']}, {tr['tokens']}-token captions, AdamW)", ""]
    lines += _table(
        ["mode", "steps/s", "images/s", "peak memory MB"],
        [
            [name, m["steps_per_s"], m["images_per_s"], m.get("peak_memory_mb")]
            for name, m in tr.get("modes", {}).items()
        ],
    )
    extra = [
        f"compiled / uncompiled step: {_f(tr.get('compile_speedup'))}x",
        f"frozen encoder live, MLX / bridge: {_f(tr.get('live_vs_bridge'))}x",
    ]
    if tr.get("checkpoint_memory_saving") is not None:
        extra.append(
            "fine-tune peak memory without / with gradient checkpointing: "
            f"{_f(tr['checkpoint_memory_saving'])}x"
        )
    return lines + [", ".join(extra) + ".", ""]


def _torch_md(tt: dict[str, Any]) -> list[str]:
    lines = ["## Training against PyTorch (the same captioner, loss and AdamW)", ""]
    if "skipped" in tt:
        return lines + [f"Skipped: {tt['skipped']}", ""]
    compiled = tt.get("torch_compile")
    lines += [
        f"Frozen encoder from a feature cache, {tt['tokens']}-token captions, torch on "
        f"{tt['torch_threads']} threads with fused AdamW"
        + (", eager and under `torch.compile` (the faster one is compared)." if compiled else "."),
        "",
    ]
    header = ["batch", "caption rows", "MLX steps/s", "torch steps/s"]
    header += ["torch.compile steps/s"] if compiled else []
    rows = []
    for r in tt.get("rows", []):
        row = [r["batch"], r["rows"], r["mlx_steps_per_s"], r["torch_steps_per_s"]]
        row += [r.get("torch_compiled_steps_per_s")] if compiled else []
        rows.append(row + [r["ratio"]])
    lines += _table(header + ["MLX / torch"], rows)
    ft = tt.get("finetune")
    if ft:
        lines += [
            f"Fine-tuning the whole encoder end to end (batch {ft['batch']}): MLX "
            f"{_f(ft['mlx_steps_per_s'])} steps/s, torch {_f(ft['torch_steps_per_s'])} steps/s, "
            f"MLX / torch {_f(ft['ratio'])}.",
            "",
        ]
    return lines


def _memory_md(mem: dict[str, Any]) -> list[str]:
    lines = ["## Fine-tuning memory: gradient checkpointing", ""]
    return (
        lines
        + _table(
            ["batch", "resting MB", "peak MB without", "peak MB with", "with / without"],
            [
                [
                    r["batch"],
                    r["without_resting_mb"],
                    r["without_peak_mb"],
                    r["with_peak_mb"],
                    r["fraction"],
                ]
                for r in mem.get("rows", [])
            ],
        )
        + [
            "Resting: the weights and AdamW moments held between steps, which checkpointing cannot "
            "shed; the rest of the peak is the step's activations, gradients and updates.",
            "",
        ]
    )


def _data_md(data: dict[str, Any]) -> list[str]:
    lines = ["## Data loading", ""]
    if "skipped" in data:
        return lines + [f"Skipped: {data['skipped']}", ""]
    return lines + _one_row_table(
        data,
        DATA_COLUMNS,
    )


def _captioners_md(cap: dict[str, Any]) -> list[str]:
    lines = ["## Pretrained captioners: MLX against transformers' generate", ""]
    if "skipped" in cap:
        return lines + [f"Skipped: {cap['skipped']}", ""]
    lines += [
        f"Beam {cap['num_beams']}, exactly {cap['tokens']} new tokens; same random weights on "
        "both sides; peak memory: MLX's allocator peak, and the rise of the process's resident "
        "set during one call (sampled, both sides alike).",
        "",
    ]
    return lines + _table(
        [
            "model", "batch", "MLX captions/s", "transformers captions/s", "MLX / transformers",
            "same captions", "MLX peak MB", "MLX RSS rise MB", "transformers RSS rise MB",
        ],
        [
            [
                r["model"], r["batch"], r["mlx_captions_per_s"], r["transformers_captions_per_s"],
                r["ratio"], r["same_captions"], r["mlx_peak_memory_mb"], r["mlx_rss_rise_mb"],
                r["transformers_rss_rise_mb"],
            ]
            for r in cap["rows"]
        ],
    )  # fmt: skip


def _demo_md(demo: dict[str, Any]) -> list[str]:
    lines = [f"## The demo's recipe at {demo['steps']:,} steps, seeds {demo['seeds']}", ""]
    return lines + _table(
        ["seed", "pair recall", "pair precision", "exact", "CIDEr", "steps/s"],
        [
            [
                r["seed"],
                r["pair_recall"],
                r["pair_precision"],
                r["exact"],
                r["CIDEr"],
                r["steps_per_s"],
            ]
            for r in demo.get("runs", [])
        ],
    )


SECTION_MARKDOWN = {
    "encoder": _encoder_md,
    "e2e": _e2e_md,
    "decode": _decode_md,
    "train": _train_md,
    "torch": _torch_md,
    "memory": _memory_md,
    "data": _data_md,
    "captioners": _captioners_md,
    "demo": _demo_md,
}


def markdown(results: dict[str, Any]) -> str:
    """The report as markdown."""
    lines = _header(results)
    for section, render in SECTION_MARKDOWN.items():
        if results.get(section):
            lines += render(results[section])
    if results.get("profile"):
        lines += profile_markdown(results["profile"])
    return "\n".join(lines).rstrip() + "\n"


def profile_markdown(prof: dict[str, Any]) -> list[str]:
    """The per-stage breakdown as markdown lines."""
    lines = [
        f"## Where the time goes (batch {prof['batch']}, beam-{prof['num_beams']}, "
        f"{prof['tokens']} tokens, {prof['image_size'][0]}x{prof['image_size'][1]} JPEGs)",
        "",
    ]
    lines += _table(
        ["stage", "ms", "share"],
        [
            [k, 1000 * v, f"{100 * prof['stages_fraction'][k]:.1f}%"]
            for k, v in prof["stages_s"].items()
        ],
    )
    totals = prof.get("totals_s", {})
    lines += [
        ", ".join(f"{k}: {1000 * v:.1f} ms" for k, v in totals.items())
        + " (stages run one by one lose MLX's overlap, so they sum to more).",
        "",
    ]
    if prof.get("metal"):
        m = prof["metal"]
        lines += [f"Metal trace: {m.get('trace') or m.get('skipped')}", ""]
    return lines


def chart(results: dict[str, Any], path: Path) -> Path | None:
    """A PNG with one panel per section (MLX against torch); None if nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    enc = results.get("encoder", {}).get("rows", [])
    if enc:
        panels.append(
            (
                "encoder MLX / torch (images/s)",
                [f"{r['shape'].split(',')[0]}\nb{r['batch']}" for r in enc],
                {"MLX": [r.get("ratio", 0) for r in enc]},
            )
        )
    e2e = results.get("e2e")
    if e2e:
        panels.append(
            (
                f"end to end captions/s (beam-{e2e['num_beams']})",
                [f"batch {e2e['batch']}"],
                {
                    "MLX": [e2e["mlx_captions_per_s"]],
                    "torch": [e2e.get("bridge_captions_per_s", 0)],
                },
            )
        )
    cap = results.get("captioners", {})
    if cap.get("rows"):
        rows = [r for r in cap["rows"] if r["model"] == cap["model"]]
        panels.append(
            (
                f"{cap['model']} captions/s (beam-{cap['num_beams']}; orange: transformers)",
                [f"batch {r['batch']}" for r in rows],
                {
                    "MLX": [r["mlx_captions_per_s"] for r in rows],
                    "torch": [r["transformers_captions_per_s"] for r in rows],
                },
            )
        )
    dec = results.get("decode")
    if dec:
        panels.append(
            (
                "decoding tokens/s",
                ["KV cache", "recompute", "generate"],
                {
                    "MLX": [
                        dec["kv_cache_tokens_per_s"],
                        dec["recompute_tokens_per_s"],
                        dec["library_tokens_per_s"],
                    ]
                },
            )
        )
    tr = results.get("train", {}).get("modes")
    if tr:
        names = list(tr)
        panels.append(
            (
                "training images/s (orange: bridge encoder)",
                [n.replace("_", "\n") for n in names],
                {"MLX": [tr[n]["images_per_s"] for n in names]},
                ["torch" if n == "bridge" else "MLX" for n in names],
            )
        )
    race = results.get("torch", {}).get("rows")
    if race:
        panels.append(
            (
                "training steps/s against PyTorch (frozen, cached)",
                [f"batch {r['batch']}" for r in race],
                {
                    "MLX": [r["mlx_steps_per_s"] for r in race],
                    "torch": [
                        max(r["torch_steps_per_s"], r.get("torch_compiled_steps_per_s", 0))
                        for r in race
                    ],
                },
            )
        )
    if not panels:
        return None
    cols = 2
    rows = (len(panels) + 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(10, 3.4 * rows), squeeze=False)
    colors = {"MLX": "#2a7ab9", "torch": "#e8833a"}
    for ax, (title, labels, series, *per_bar) in zip(axes.flat, panels, strict=False):
        width = 0.8 / len(series)
        for i, (name, values) in enumerate(series.items()):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
            color = [colors[c] for c in per_bar[0]] if per_bar else colors[name]
            ax.bar(xs, values, width, label=name, color=color)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        if len(series) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    sysinfo = results.get("system", {})
    fig.suptitle(f"mlx-caption: MLX vs PyTorch — {sysinfo.get('cpu_model', '')}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def profile_chart(prof: dict[str, Any], path: Path) -> Path:
    """A horizontal bar chart of the per-stage times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(prof["stages_s"])
    ms = [1000 * prof["stages_s"][n] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1))
    ax.barh(names[::-1], ms[::-1], color="#2a7ab9")
    ax.set_xlabel("ms per batch")
    ax.set_title(
        f"where the time goes: batch {prof['batch']}, beam-{prof['num_beams']}, "
        f"{prof['tokens']} tokens",
        fontsize=9,
    )
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_results(results: dict[str, Any], out_dir: Path, stem: str = "bench") -> dict[str, str]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` (and the profile's) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out_dir / f"{stem}.json"), "markdown": str(out_dir / f"{stem}.md")}
    png = chart(results, out_dir / f"{stem}.png")
    if png:
        files["png"] = str(png)
    if results.get("profile"):
        files["profile_png"] = str(
            profile_chart(results["profile"], out_dir / f"{stem}_profile.png")
        )
    results["files"] = files
    (out_dir / f"{stem}.md").write_text(markdown(results))
    with open(out_dir / f"{stem}.json", "w") as f:
        json.dump(results, f, indent=1, default=str)
        f.write("\n")
    return files
