"""Results files: the JSON, a markdown report and a PNG chart."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# (key in the summary, what, goal) — the targets the project set itself on a 2-core CPU.
GOALS = (
    ("encoder.ratio", "encoder MLX / bridge, ViT-B/32 batch 32", 1.2),
    ("encoder.mlx_peak_fraction", "ViT forward / float32 matmul peak", 0.6),
    ("e2e.ratio", "end to end (encode + beam-3, 20 tokens) MLX / bridge", 1.3),
    ("decode.kv_cache_speedup", "KV cache / recompute, 20 tokens", 3.0),
    ("train.compile_speedup", "compiled / uncompiled training step", 1.2),
    (
        "captioners.ratio",
        "pretrained captioner (BLIP-base, batch 8, beam 3, 20 tokens) MLX / transformers",
        1.5,
    ),
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
    """Each goal with the measured value and whether it is met (None when not measured)."""
    out = []
    for key, what, target in GOALS:
        value = lookup(results, key)
        ok = None
        if isinstance(value, (int, float)) and not math.isnan(value):
            ok = bool(value >= target)
        out.append({"key": key, "what": what, "value": value, "goal": target, "met": ok})
    return out


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


def _one_row_table(section: dict[str, Any], columns: dict[str, str]) -> list[str]:
    """A one-row table of a section's figures: ``columns`` maps each header to its key."""
    return _table(list(columns), [[section.get(key) for key in columns.values()]])


def markdown(results: dict[str, Any]) -> str:
    """The report as markdown."""
    sysinfo = results.get("system", {})
    v = sysinfo.get("versions", {})
    blas = sysinfo.get("blas", {})
    lines = [
        "# mlx-caption benchmark: pure MLX against the PT bridge",
        "",
        f"- when: {sysinfo.get('time')}, {results.get('run', 'full')} run, "
        f"{results.get('elapsed_s', 0):.0f} s",
        f"- device: {sysinfo.get('device')} · CPU: {sysinfo.get('cpu_model')} "
        f"({sysinfo.get('cpu_count')} cores) · {sysinfo.get('platform')}",
        f"- MLX {v.get('mlx')} · torch {v.get('torch')} · transformers {v.get('transformers')}",
        f"- BLAS for MLX: {blas.get('loaded') or blas.get('reason')}",
        f"- threads: torch {sysinfo.get('threads', {}).get('torch')}; "
        f"load average at start {sysinfo.get('load_average')}, at end {results.get('load_end')}",
        "",
        "Every figure is the median of several timed repeats after warm-up; the MLX and bridge",
        "sides (and the matmul peak) are timed in alternation, so their ratios hold even on a",
        "busy machine where absolute numbers move.",
        "",
        "## Goals",
        "",
    ]
    lines += _table(
        ["goal", "measured", "target", "met"],
        [[g["what"], g["value"], f">= {g['goal']}", g["met"]] for g in results.get("goals", [])],
    )

    enc = results.get("encoder")
    if enc:
        lines += ["## Encoder (float32, random weights shared by both frameworks)", ""]
        lines += _table(
            [
                "model",
                "batch",
                "MLX img/s",
                "bridge img/s",
                "MLX / bridge",
                "MLX GFLOP/s",
                "MLX % peak",
                "bridge % peak",
                "matmul peak GFLOP/s",
            ],
            [
                [
                    r["model"],
                    r["batch"],
                    r["mlx_images_per_s"],
                    r.get("bridge_images_per_s"),
                    r.get("ratio"),
                    r["mlx_gflops"],
                    100 * r["mlx_peak_fraction"],
                    100 * r["bridge_peak_fraction"] if "bridge_peak_fraction" in r else None,
                    r["peak_gflops"],
                ]
                for r in enc.get("rows", [])
            ],
        )
        notes = set()
        for h in enc.get("half", []):
            if "skipped" in h:
                note = f"Half precision ({h['dtype']}): {h['skipped']}."
                if note not in notes:
                    notes.add(note)
                    lines += [note, ""]
            else:
                lines += [
                    f"Half precision ({h['dtype']}, {h['model']}, batch {h['batch']}): "
                    f"{_f(h['mlx_images_per_s'])} img/s, {_f(h['speedup'])}x float32.",
                    "",
                ]

    e2e = results.get("e2e")
    if e2e:
        lines += [
            f"## End to end: encode + beam-{e2e['num_beams']} decoding of {e2e['tokens']} tokens",
            "",
        ]
        lines += _one_row_table(
            e2e,
            {
                "batch": "batch",
                "MLX captions/s": "mlx_captions_per_s",
                "bridge captions/s": "bridge_captions_per_s",
                "MLX / bridge": "ratio",
                "same captions": "same_captions",
            },
        )

    cap = results.get("captioners")
    if cap:
        lines += [
            f"## Pretrained captioners: MLX against transformers' generate (beam "
            f"{cap['num_beams']}, {cap['tokens']} new tokens)",
            "",
            "Same random weights on both sides; peak memory: MLX's allocator peak, and the rise "
            "of the process's resident set during one call (sampled, both sides alike).",
            "",
        ]
        lines += _table(
            [
                "model", "batch", "MLX captions/s", "transformers captions/s",
                "MLX / transformers", "same captions", "MLX peak MB", "MLX RSS rise MB",
                "transformers RSS rise MB",
            ],
            [
                [
                    r["model"], r["batch"], r["mlx_captions_per_s"],
                    r["transformers_captions_per_s"], r["ratio"], r["same_captions"],
                    r["mlx_peak_memory_mb"], r["mlx_rss_rise_mb"], r["transformers_rss_rise_mb"],
                ]
                for r in cap["rows"]
            ],
        )  # fmt: skip

    dec = results.get("decode")
    if dec:
        lines += [f"## Decoding: KV cache against recomputing the prefix ({dec['length']} tokens)"]
        lines += [
            "",
            f"Greedy over {dec['rows']} rows, both with a compiled step like `generate`'s "
            f"(uncompiled: {_f(dec.get('kv_cache_speedup_uncompiled'))}x); `generate` "
            "itself for reference.",
            "",
        ]
        lines += _one_row_table(
            dec,
            {
                "KV cache tok/s": "kv_cache_tokens_per_s",
                "recompute tok/s": "recompute_tokens_per_s",
                "speedup": "kv_cache_speedup",
                "generate tok/s": "library_tokens_per_s",
                "same tokens": "same_tokens",
            },
        )

    tr = results.get("train")
    if tr:
        lines += [
            f"## Training (batch {tr['batch']}, {tr['tokens']}-token captions, AdamW)",
            "",
        ]
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
        lines += [", ".join(extra) + ".", ""]

    data = results.get("data")
    if data:
        lines += ["## Data loading", ""]
        if "skipped" in data:
            lines += [f"Skipped: {data['skipped']}", ""]
        else:
            lines += _one_row_table(
                data,
                {
                    "images": "images",
                    "source px": "source_px",
                    "stream img/s": "stream_images_per_s",
                    "Pillow exact img/s": "pillow_exact_images_per_s",
                    "Pillow bilinear img/s": "pillow_bilinear_images_per_s",
                },
            )

    prof = results.get("profile")
    if prof:
        lines += profile_markdown(prof)
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
    """A PNG with one panel per section (MLX against the bridge); None if nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    enc = results.get("encoder", {}).get("rows", [])
    if enc:
        panels.append(
            (
                "encoder images/s",
                [f"{r['model']}\nb{r['batch']}" for r in enc],
                {
                    "MLX": [r["mlx_images_per_s"] for r in enc],
                    "bridge": [r.get("bridge_images_per_s", 0) for r in enc],
                },
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
                    "bridge": [e2e.get("bridge_captions_per_s", 0)],
                },
            )
        )
    cap = results.get("captioners")
    if cap:
        rows = [r for r in cap["rows"] if r["model"] == cap["model"]]
        panels.append(
            (
                f"{cap['model']} captions/s (beam-{cap['num_beams']})",
                [f"batch {r['batch']}" for r in rows],
                {
                    "MLX": [r["mlx_captions_per_s"] for r in rows],
                    "transformers": [r["transformers_captions_per_s"] for r in rows],
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
                ["bridge" if n == "bridge" else "MLX" for n in names],
            )
        )
    if not panels:
        return None
    cols = 2
    rows = (len(panels) + 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(10, 3.4 * rows), squeeze=False)
    colors = {"MLX": "#2a7ab9", "bridge": "#e8833a", "transformers": "#e8833a"}
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
    fig.suptitle(f"mlx-caption: MLX vs PT bridge — {sysinfo.get('cpu_model', '')}", fontsize=10)
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
