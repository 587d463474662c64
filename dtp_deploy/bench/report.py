"""Reports of a benchmark dict: rich tables, a Markdown table and a matplotlib figure."""

from __future__ import annotations

from typing import Any


def _ms(stats: dict[str, float]) -> str:
    return f"{stats['median']:.2f} / {stats['p90']:.2f} / {stats['p99']:.2f}"


def _keep(ratios: list[float]) -> str:
    return "/".join(f"{100 * r:.0f}" for r in ratios) + "%"


def _size(r: dict[str, Any]) -> str:
    return f"{r['height']}x{r['width']}"


def _vs_fp32(r: dict[str, Any]) -> str:
    """Pruned variant against fp32 PyTorch: images with equal keep counts, token labels that
    agree, mIoU change (points) on the timing inputs' masks."""
    a = r.get("accuracy_vs_fp32", {}).get("pruned")
    if not a:
        return "reference" if r["backend"] == "torch" else ""
    return (f"{a['keep_agreement']:.0%} / {a['label_agreement']:.2%} / "
            f"{100 * a['miou_change']:+.2f}")


def result_rows(report: dict[str, Any]) -> list[list[str]]:
    """One side-by-side row per (model, backend, precision, batch, size)."""
    rows = []
    for r in report["results"]:
        head = [r["model"], r["backend"], r["precision"], str(r["batch"]), _size(r)]
        if r["status"] != "ok":
            rows.append(head + [f"{r['status']}: {r['reason']}"] + [""] * 11)
            continue
        base = r.get("speedup_vs_slowest_dense")
        d, p = r["dense"], r["pruned"]
        rows.append(head + [
            _ms(d["latency_ms"]), _ms(p["latency_ms"]),
            f"{d['latency_per_image_ms']['median']:.2f} / {p['latency_per_image_ms']['median']:.2f}",
            f"{d['throughput_img_s']:.1f} / {p['throughput_img_s']:.1f}",
            f"{r['speedup']:.2f}x",
            f"{base['dense']:.2f}x / {base['pruned']:.2f}x" if base else "",
            f"{d['gmacs_per_image']:.3f} / {p['gmacs_per_image']:.3f}",
            f"{r['pool_latency_ratio']:.1%} vs {r['gmacs_ratio']:.1%}"
            + (f" (padded {r['gmacs_padded_ratio']:.1%})" if r["batch"] > 1 else ""),
            _keep(p["keep_ratios"]),
            _vs_fp32(r),
            f"{r['peak_host_rss_mb']:.0f}" if r["device"] == "cpu" else
            f"{d['peak_cuda_memory_mb']:.0f} / {p['peak_cuda_memory_mb']:.0f}",
        ])
    return rows


RESULT_HEADER = ["model", "backend", "precision", "batch", "size",
                 "dense ms/batch med / p90 / p99", "pruned ms/batch med / p90 / p99",
                 "ms/img dense / pruned", "img/s dense / pruned", "speedup",
                 "vs slowest dense: dense / pruned",
                 "GMACs/img dense / pruned", "latency vs GMACs (pruned/dense over the pool; padded: as the batch computes)",
                 "keep per stage (pruned)",
                 "pruned vs fp32 torch: same keep counts / same labels / mIoU change (pts)",
                 "peak MiB (cpu: process RSS; cuda: dense / pruned)"]


def accuracy_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for a in report.get("accuracy", []):
        d, p = a["dense"], a["pruned"]
        rows.append([a["model"], f"{a['data']} @ {a['height']}x{a['width']}",
                     ", ".join(f"{t:g}" for t in a["thresholds"]),
                     f"{d['miou']:.2%}", f"{p['miou']:.2%}", f"{-a['miou_drop']:+.2%}",
                     f"{a['pruned_dense_agreement']:.2%}",
                     f"{d['gmacs_per_image']:.3f} / {p['gmacs_per_image']:.3f}",
                     _keep(p["keep_ratios"])])
    return rows


ACCURACY_HEADER = ["model", "data", "thresholds", "mIoU dense", "mIoU pruned", "change",
                   "pixels pruned = dense", "GMACs/img dense / pruned", "keep per stage"]


def sweep_rows(sweep: dict[str, Any]) -> list[list[str]]:
    return [[p["mode"] if p["stage"] is None else f"stage {p['stage']}",
             ", ".join(f"{t:g}" for t in p["thresholds"]), _keep(p["keep_ratios"]),
             f"{p['gmacs_per_image']:.3f}", f"{p['gmacs_ratio']:.1%}", f"{p['miou']:.2%}",
             f"{-p['miou_drop']:+.2%}", f"{p['agreement']:.2%}"] for p in sweep["points"]]


SWEEP_HEADER = ["mode", "thresholds", "keep per stage", "GMACs/img", "of dense", "mIoU",
                "change", "pixels = dense"]


def print_report(report: dict[str, Any], console=None) -> None:
    """Side-by-side tables for a person."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    env = report["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    console.print(f"[bold]dtp-bench[/] on {env['device']} ({env['device_name']}, "
                  f"{env['torch_threads']} torch threads); {versions}")
    console.print("dense vs pruned from the same weights, interleaved; latency in ms per batch "
                  "(median / p90 / p99); GMACs = analytic multiply-adds per image")
    for r in report["results"]:
        title = escape(f"{r['model']}") + f" | {r['backend']} {r['precision']} | batch {r['batch']} | {_size(r)}"
        if r["status"] != "ok":
            console.print(f"[bold]{title}[/]: [yellow]{r['status']}: {escape(r['reason'])}[/]")
            continue
        table = Table("", "median", "p90", "p99", "ms/img", "img/s", "GMACs/img", "keep/stage",
                      title=title, title_justify="left", title_style="bold")
        for key in ("dense", "pruned"):
            v = r[key]
            lat = v["latency_ms"]
            table.add_row(key, f"{lat['median']:.1f}", f"{lat['p90']:.1f}", f"{lat['p99']:.1f}",
                          f"{v['latency_per_image_ms']['median']:.1f}", f"{v['throughput_img_s']:.1f}",
                          f"{v['gmacs_per_image']:.3f}", _keep(v["keep_ratios"]))
        table.add_row("ratio", f"{r['latency_ratio']:.0%}", "", "", "",
                      f"{r['speedup']:.2f}x", f"{r['gmacs_ratio']:.0%}", "", style="bold")
        console.print(table)
        padded = f", {r['gmacs_padded_ratio']:.0%} as the batch computes" if r["batch"] > 1 else ""
        console.print(f"pruned/dense over the pool (mean of each input's median): latency "
                      f"{r['pool_latency_ratio']:.0%}, GMACs {r['gmacs_ratio']:.0%}{padded}")
        if r.get("speedup_vs_slowest_dense"):
            b = r["speedup_vs_slowest_dense"]
            console.print(f"vs the slowest dense row ({r['baseline']}): dense {b['dense']:.2f}x, "
                          f"pruned {b['pruned']:.2f}x")
        if r.get("accuracy_vs_fp32"):
            a = r["accuracy_vs_fp32"]["pruned"]
            console.print(f"pruned vs fp32 PyTorch on {a['images']} inputs: keep counts equal on "
                          f"{a['keep_agreement']:.0%}, token labels on {a['label_agreement']:.2%}, "
                          f"mIoU {100 * a['miou']:.2f} ({100 * a['miou_change']:+.2f} pts)")
    for a in report.get("accuracy", []):
        acc = Table("", "mIoU", "pixel acc", "GMACs/img", "keep/stage", title_justify="left",
                    title=f"accuracy: {escape(a['model'])} on {escape(a['data'])} at {a['height']}x{a['width']}, "
                    f"thresholds {', '.join(f'{t:g}' for t in a['thresholds'])}", title_style="bold")
        for key in ("dense", "pruned"):
            v = a[key]
            acc.add_row(key, f"{v['miou']:.2%}", f"{v['pixel_accuracy']:.2%}",
                        f"{v['gmacs_per_image']:.3f}", _keep(v["keep_ratios"]))
        console.print(acc)
        console.print(f"mIoU change {-a['miou_drop']:+.2%}; pruned predicts the same class as "
                      f"dense on {a['pruned_dense_agreement']:.2%} of pixels")
    for s in report.get("sweep", []):
        sw = Table(*SWEEP_HEADER, title=f"threshold sweep: {escape(s['model'])} on {escape(s['data'])} "
                   f"(dense: {s['dense']['gmacs_per_image']:.3f} GMACs, mIoU {s['dense']['miou']:.2%})")
        for row in sweep_rows(s):
            sw.add_row(*row)
        console.print(sw)
    noisy = [f"{n}: {b['reason']}" for n, b in report["backends"].items() if not b["available"]]
    if noisy:
        console.print("[dim]not run: " + escape("; ".join(noisy)) + "[/]")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(report: dict[str, Any]) -> str:
    """Tables ready to paste into BENCHMARKS.md (latency, then accuracy and sweeps if present)."""
    env = report["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    parts = [f"Device: {env['device']} ({env['device_name']}, {env['torch_threads']} torch threads); "
             f"{versions}. Dense and pruned interleaved in one process; latency per batch, "
             "median / p90 / p99 over "
             f"{report['settings']['iterations'] if report['settings']['duration'] is None else str(report['settings']['duration']) + ' s of'} "
             "iterations after warm-up; GMACs are analytic multiply-adds from the measured keep counts.",
             "", _md_table(RESULT_HEADER, result_rows(report))]
    if report.get("accuracy"):
        parts += ["", _md_table(ACCURACY_HEADER, accuracy_rows(report))]
    for s in report.get("sweep", []):
        parts += ["", f"Threshold sweep, {s['model']} on {s['data']}:", "",
                  _md_table(SWEEP_HEADER, sweep_rows(s))]
    return "\n".join(parts) + "\n"


def plot_report(report: dict[str, Any], path: str) -> None:
    """A PNG: latency per image dense vs pruned, keep ratio per stage, mIoU vs GMACs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in report["results"] if r["status"] == "ok"]
    curves = report.get("sweep", [])
    accuracy = report.get("accuracy", [])
    panels = 2 + bool(curves or accuracy)
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 5.2), constrained_layout=True)
    dense_colour, pruned_colour = "#4c72b0", "#dd8452"
    models = sorted({r["model"] for r in ok})

    ax = axes[0]
    labels = [(f"{r['model']}\n" if len(models) > 1 else "")
              + f"{r['backend']} {r['precision']}\nb{r['batch']} {_size(r)}" for r in ok]
    x = range(len(ok))
    for offset, key, colour in ((-0.2, "dense", dense_colour), (0.2, "pruned", pruned_colour)):
        med = [r[key]["latency_per_image_ms"]["median"] for r in ok]
        p90 = [r[key]["latency_per_image_ms"]["p90"] - m for r, m in zip(ok, med)]
        ax.bar([i + offset for i in x], med, 0.4, yerr=[[0] * len(med), p90], capsize=3,
               color=colour, label=f"{key} (median, bar to p90)")
    for i, r in enumerate(ok):
        top = max(r["dense"]["latency_per_image_ms"]["p90"], r["pruned"]["latency_per_image_ms"]["p90"])
        ax.annotate(f"{r['speedup']:.2f}x\nGMACs {r['gmacs_ratio']:.0%}", (i, top),
                    xytext=(0, 4), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("latency per image (ms)")
    ax.set_title(f"latency on {report['environment']['device_name'][:40]}", fontsize=10)
    ax.set_ylim(0, 1.45 * max((max(r["dense"]["latency_per_image_ms"]["p90"], r["pruned"]["latency_per_image_ms"]["p90"]) for r in ok), default=1))
    ax.legend(fontsize=8, loc="upper left", ncol=2)

    ax = axes[1]
    seen = {}
    for r in ok:  # keep ratios depend on model, size and inputs, not on the backend
        seen.setdefault((r["model"], r["height"], r["width"], r["batch"]), r)
    stages = max((len(r["pruned"]["keep_ratios"]) for r in seen.values()), default=0)
    width = 0.8 / max(1, len(seen))
    for j, ((model, h, w, b), r) in enumerate(seen.items()):
        ratios = r["pruned"]["keep_ratios"]
        xs = [s - 0.4 + width * (j + 0.5) for s in range(len(ratios))]
        bars = ax.bar(xs, ratios, width, label=(f"{model} " if len(models) > 1 else "") + f"b{b} {h}x{w}")
        ax.bar_label(bars, [f"{v:.0%}" for v in ratios], fontsize=7)
    ax.axhline(1.0, color=dense_colour, linestyle="--", linewidth=1, label="dense (every token)")
    ax.set_xticks(range(stages), [f"stage {s}" for s in range(stages)])
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("tokens entering the stage (fraction)")
    ax.set_title("keep ratio per stage, pruned", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")

    if panels == 3:
        ax = axes[2]
        for s in curves:
            for mode, stage in sorted({(p["mode"], p["stage"]) for p in s["points"]},
                                      key=lambda m: (m[0] != "uniform", m[1] or 0)):
                pts = sorted((p for p in s["points"] if p["mode"] == mode and p["stage"] == stage),
                             key=lambda p: p["gmacs_per_image"])
                name = "same threshold, all stages" if mode == "uniform" else f"stage {stage} only"
                ax.plot([p["gmacs_per_image"] for p in pts], [100 * p["miou"] for p in pts],
                        "o-" if mode == "uniform" else ".--", label=f"{s['model']}: {name}"
                        if len(models) > 1 else name)
                if mode == "uniform":
                    for p in pts:
                        ax.annotate(f"{p['thresholds'][0]:g}", (p["gmacs_per_image"], 100 * p["miou"]),
                                    xytext=(3, -9), textcoords="offset points", fontsize=7)
        for a in accuracy:
            ax.plot(a["dense"]["gmacs_per_image"], 100 * a["dense"]["miou"], "*", ms=14,
                    color=dense_colour, label="dense")
            ax.plot(a["pruned"]["gmacs_per_image"], 100 * a["pruned"]["miou"], "D", ms=8,
                    color=pruned_colour,
                    label="pruned, thresholds " + ", ".join(f"{t:g}" for t in a["thresholds"]))
        data = (curves or accuracy)[0]["data"]
        ax.set_xlabel("GMACs per image (multiply-adds)")
        ax.set_ylabel("mIoU (%)")
        ax.set_title(f"mIoU vs GMACs on {data}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(", ".join(models) + " - dense vs pruned from the same weights", fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)
