"""The bench's table and its Backpack / Transformer throughput ratios."""

from __future__ import annotations


def throughput_ratios(rows: list[dict]) -> list[dict]:
    """Backpack / Transformer tokens/s per size: each Backpack row against the Transformer row
    with the same loss, compile and optimizer settings, and best against best."""
    ok = [r for r in rows if r["error"] is None]
    out = []
    for size in dict.fromkeys(r["size"] for r in ok):
        backpacks = [r for r in ok if r["size"] == size and r["family"] == "backpack"]
        transformers = [r for r in ok if r["size"] == size and r["family"] == "transformer"]
        for b in backpacks:
            for t in transformers:
                if (b["loss"], b["compile"], b["optimizer"]) == (t["loss"], t["compile"], t["optimizer"]):
                    out.append({"size": size, "kind": "same settings", "backpack": describe(b),
                                "transformer": describe(t), "backpack_over_transformer":
                                b["tokens_per_s"] / t["tokens_per_s"]})
        if backpacks and transformers:
            b = max(backpacks, key=lambda r: r["tokens_per_s"])
            t = max(transformers, key=lambda r: r["tokens_per_s"])
            out.append({"size": size, "kind": "best vs best", "backpack": describe(b), "transformer": describe(t),
                        "backpack_over_transformer": b["tokens_per_s"] / t["tokens_per_s"]})
    return out


def describe(row: dict) -> str:
    parts = [f"sense_sum={row['sense_sum']}"] if row["sense_sum"] else []
    parts += [f"loss={row['loss']}", f"compile={row['compile']}", f"optimizer={row['optimizer']}",
              f"mb={row.get('micro_batch')}"]
    return " ".join(parts)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_report(report: dict) -> None:
    print(f"device: {report['device']}  peak bf16 FLOP/s: {_fmt(report['peak_flops'], '.3g')}  "
          f"precision: {report['precision']}  seq_len: {report['seq_len']}")
    header = ["model", "sense_sum", "loss", "compile", "optimizer", "micro_batch", "tokens/s", "MFU", "MFU exec",
              "peak GiB", "step s", "error"]
    lines = [header]
    for r in report["results"]:
        sense = r["sense_sum"] or "-"
        if r.get("sense_sum_resolved") and r["sense_sum_resolved"] != r["sense_sum"]:
            sense += f"->{r['sense_sum_resolved']}"
        lines.append([r["model"], sense, r["loss"], str(r["compile"]), r["optimizer"],
                      _fmt(r.get("micro_batch"), "d"), _fmt(r.get("tokens_per_s"), ",.0f"), _fmt(r.get("mfu"), ".1%"),
                      _fmt(r.get("mfu_executed"), ".1%"), _fmt(r.get("peak_memory_gib"), ".1f"),
                      _fmt(r.get("step_time_s"), ".4f"), r["error"] or ""])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    for r in report["results"]:
        if r.get("profile"):
            print(f"\nprofile of {r['model']} {describe(r)}, 3 steps:\n{r['profile']}")
    if report["ratios"]:
        print("\nbackpack/transformer tokens/s per size:")
        for r in report["ratios"]:
            print(f"  {r['size']:<6} {r['backpack_over_transformer']:.3f}  ({r['kind']}: backpack {r['backpack']}; "
                  f"transformer {r['transformer']})")
