#!/usr/bin/env python3
"""Medians of scripts/bench.sh's runs, Lathe / reference ratios, the suite's targets: one table on
stdout and the same figures as JSON.

  summarize.py RUNS_DIR RESULTS.json [--note TEXT]
"""
import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

TRAIN_FIGURES = ("tokens_per_s", "tokens_per_cpu_s", "ms_per_step", "peak_rss_mib", "model_tflops_per_s", "gemm_peak_tflops_per_s", "mfu")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")] if path.exists() else []


def medians(rows, key_fields, figures):
    groups = defaultdict(list)
    for row in rows:
        groups[tuple(row.get(field) for field in key_fields)].append(row)
    result = {}
    for key, group in groups.items():
        result[key] = {figure: statistics.median(row[figure] for row in group) for figure in figures}
        result[key]["runs"] = len(group)
    return result


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(value, digits=1):
    return "-" if value is None else f"{value:,.{digits}f}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", type=Path)
    parser.add_argument("results", type=Path)
    parser.add_argument("--note", default="")
    args = parser.parse_args()

    train = medians(read_jsonl(args.runs / "train.jsonl"), ("impl", "model", "train", "dtype", "padding_free"), TRAIN_FIGURES)
    infer = medians(read_jsonl(args.runs / "infer.jsonl"), ("impl", "batch"), ("prefill_tokens_per_s", "decode_tokens_per_s"))
    tokenizer = defaultdict(list)
    text = (args.runs / "tokenizer.txt").read_text() if (args.runs / "tokenizer.txt").exists() else ""
    for side, value in re.findall(r"^(lathe|HF tokenizers) encode.*?: ([0-9.]+) MB/s", text, re.M):
        tokenizer["lathe" if side == "lathe" else "reference"].append(float(value))
    tokenizer = {side: statistics.median(values) for side, values in tokenizer.items()}

    results = {"note": args.note, "training": [], "inference": [], "tokenizer": tokenizer, "targets": []}
    print(f"Training ({args.note})")
    print("| model | train | dtype | Lathe tok/s | ref tok/s | ratio | Lathe tok/CPU-s | ref tok/CPU-s | ratio "
          "| Lathe ms/step | ref ms/step | Lathe peak MiB | ref peak MiB | ratio | Lathe MFU | GEMM peak TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in sorted(k for k in train if k[0] == "lathe"):
        _, model, kind, dtype, padding_free = key
        lathe = train[key]
        ref = train.get(("reference", model, kind, dtype, None))
        row = {"model": model, "train": kind, "dtype": dtype, "padding_free": padding_free, "lathe": lathe,
               "reference": ref, "tokens_per_s_ratio": ratio(lathe["tokens_per_s"], ref and ref["tokens_per_s"]),
               "tokens_per_cpu_s_ratio": ratio(lathe["tokens_per_cpu_s"], ref and ref["tokens_per_cpu_s"]),
               "peak_rss_ratio": ratio(lathe["peak_rss_mib"], ref and ref["peak_rss_mib"])}
        results["training"].append(row)
        print(f"| {model} | {kind}{'' if padding_free else ' padded'} | {dtype} | {fmt(lathe['tokens_per_s'])} "
              f"| {fmt(ref and ref['tokens_per_s'])} | {fmt(row['tokens_per_s_ratio'], 2)} | {fmt(lathe['tokens_per_cpu_s'])} "
              f"| {fmt(ref and ref['tokens_per_cpu_s'])} | {fmt(row['tokens_per_cpu_s_ratio'], 2)} | {fmt(lathe['ms_per_step'], 0)} "
              f"| {fmt(ref and ref['ms_per_step'], 0)} | {fmt(lathe['peak_rss_mib'], 0)} | {fmt(ref and ref['peak_rss_mib'], 0)} "
              f"| {fmt(row['peak_rss_ratio'], 2)} | {100 * lathe['mfu']:.1f}% | {lathe['gemm_peak_tflops_per_s']:.3f} |")

    print("\nInference (model a, prompt 256, greedy, KV cache)")
    print("| batch | Lathe prefill tok/s | ref prefill tok/s | ratio | Lathe decode tok/s | ref decode tok/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for batch in sorted({k[1] for k in infer}):
        lathe, ref = infer.get(("lathe", batch)), infer.get(("reference", batch))
        row = {"batch": batch, "lathe": lathe, "reference": ref,
               "prefill_ratio": ratio(lathe and lathe["prefill_tokens_per_s"], ref and ref["prefill_tokens_per_s"]),
               "decode_ratio": ratio(lathe and lathe["decode_tokens_per_s"], ref and ref["decode_tokens_per_s"])}
        results["inference"].append(row)
        print(f"| {batch} | {fmt(lathe and lathe['prefill_tokens_per_s'])} | {fmt(ref and ref['prefill_tokens_per_s'])} "
              f"| {fmt(row['prefill_ratio'], 2)} | {fmt(lathe and lathe['decode_tokens_per_s'])} "
              f"| {fmt(ref and ref['decode_tokens_per_s'])} | {fmt(row['decode_ratio'], 2)} |")
    if tokenizer:
        print(f"\nTokenizer encode (Qwen3, one thread): Lathe {fmt(tokenizer.get('lathe'), 2)} MB/s, "
              f"Hugging Face tokenizers {fmt(tokenizer.get('reference'), 2)} MB/s, "
              f"ratio {fmt(ratio(tokenizer.get('lathe'), tokenizer.get('reference')), 2)}")

    # The targets are read on Lathe's default (padding-free, as `lathe sft` trains).
    def find(model, kind, dtype):
        return next((r for r in results["training"] if (r["model"], r["train"], r["dtype"]) == (model, kind, dtype)
                     and r["padding_free"]), None)

    lora_a, full_b = find("a", "lora", "float32"), find("b", "full", "float32")
    bf16 = [r for r in results["training"] if r["dtype"] == "bfloat16"]
    decode_1 = next((r for r in results["inference"] if r["batch"] == 1), None)
    targets = [
        ("LoRA (a) tokens/s ratio", lora_a and lora_a["tokens_per_s_ratio"], ">=", 2.0),
        ("LoRA (a) tokens per CPU-second ratio", lora_a and lora_a["tokens_per_cpu_s_ratio"], ">=", 2.0),
        ("LoRA (a) peak memory ratio", lora_a and lora_a["peak_rss_ratio"], "<=", 0.5),
        ("full (b) tokens/s ratio", full_b and full_b["tokens_per_s_ratio"], ">=", 1.5),
        ("full (b) tokens per CPU-second ratio", full_b and full_b["tokens_per_cpu_s_ratio"], ">=", 1.5),
        ("best bfloat16 MFU", max((r["lathe"]["mfu"] for r in bf16), default=None), ">=", 0.40),
        ("decode batch 1 ratio", decode_1 and decode_1["decode_ratio"], ">=", 1.0),
        ("tokenizer ratio", ratio(tokenizer.get("lathe"), tokenizer.get("reference")), ">=", 1.0),
    ]
    print("\nTargets")
    for name, value, op, goal in targets:
        met = None if value is None else (value >= goal if op == ">=" else value <= goal)
        results["targets"].append({"target": name, "value": value, "goal": f"{op} {goal}", "met": met})
        print(f"- {name}: {fmt(value, 2)} (goal {op} {goal}): {'-' if met is None else 'met' if met else 'MISSED'}")
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.results}")


if __name__ == "__main__":
    main()
