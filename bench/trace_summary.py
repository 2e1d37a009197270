#!/usr/bin/env python3
"""Where a traced training run spends its time, from a trace written by `train_bench --trace FILE`:
first by operator family (GEMM, attention, norms/activations/RoPE, loss, optimizer, data, other),
then the operators by self time.

    bench/trace_summary.py FILE [TOP]

Self time is an event's duration minus the events nested inside it on the same thread, so the
columns sum to the traced time without counting an operator and the operators it calls twice.

Families come from the `lathe::` scopes the library records (the fused operators, the chunked
cross entropy, the optimizer step, batch collation) and from the GEMM operators' names: a matrix
product is GEMM wherever it runs (the output head's inside the loss included) except inside
attention, whose score and context products are attention's cost.
"""
import collections
import json
import sys

GEMM = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mv", "aten::addmv", "aten::dot",
        "aten::matmul", "aten::linear"}
SCOPE_FAMILIES = {"attention": "attention", "rms_norm": "norms/activations/RoPE",
                  "swiglu": "norms/activations/RoPE", "rotary": "norms/activations/RoPE",
                  "cross_entropy": "loss", "optimizer_step": "optimizer", "collate": "data",
                  "linear16": "GEMM"}  # a 16-bit weight's product, its conversions included
FAMILIES = ["GEMM", "attention", "norms/activations/RoPE", "loss", "optimizer", "data", "other"]


def scope_family(name):
    """The family of a `lathe::` scope (forward or backward), or None for any other event."""
    if not name.startswith("lathe::"):
        return None
    return SCOPE_FAMILIES.get(name[len("lathe::"):].removesuffix("_backward"))


def family(name, enclosing_scope):
    if enclosing_scope == "attention":
        return "attention"
    if name in GEMM:
        return "GEMM"
    return enclosing_scope or "other"


def summarise(events):
    """(traced µs, self µs by operator, inclusive µs by operator, calls by operator, self µs by family)."""
    by_thread = collections.defaultdict(list)
    for event in events:
        if event.get("ph") == "X":
            by_thread[event["tid"]].append(event)
    self_us, inclusive_us, calls = collections.Counter(), collections.Counter(), collections.Counter()
    family_us = collections.Counter()
    traced_us = 0.0
    for thread_events in by_thread.values():
        thread_events.sort(key=lambda e: (e["ts"], -e["dur"]))
        open_events, nested_us, scopes = [], collections.Counter(), {}
        for index, event in enumerate(thread_events):
            while open_events and thread_events[open_events[-1]]["ts"] + thread_events[open_events[-1]]["dur"] <= event["ts"]:
                open_events.pop()
            if open_events:
                nested_us[open_events[-1]] += event["dur"]
            else:
                traced_us += event["dur"]
            # The innermost enclosing lathe:: scope (or this event's own).
            scopes[index] = scope_family(event["name"]) or (scopes[open_events[-1]] if open_events else None)
            open_events.append(index)
        for index, event in enumerate(thread_events):
            own = event["dur"] - nested_us[index]
            self_us[event["name"]] += own
            inclusive_us[event["name"]] += event["dur"]
            calls[event["name"]] += 1
            family_us[family(event["name"], scopes[index])] += own
    return traced_us, self_us, inclusive_us, calls, family_us


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    with open(sys.argv[1]) as file:
        traced_us, self_us, inclusive_us, calls, family_us = summarise(json.load(file))
    print(f"traced: {traced_us / 1e3:.1f} ms (top-level events, all threads)")
    print(f"{'self ms':>10} {'share':>6}  family")
    for name in FAMILIES:
        print(f"{family_us[name] / 1e3:10.1f} {family_us[name] / traced_us:6.1%}  {name}")
    print(f"\n{'self ms':>10} {'share':>6} {'incl ms':>10} {'calls':>7}  operator")
    for name, microseconds in self_us.most_common(top):
        print(f"{microseconds / 1e3:10.1f} {microseconds / traced_us:6.1%} {inclusive_us[name] / 1e3:10.1f} "
              f"{calls[name]:7d}  {name}")


if __name__ == "__main__":
    main()
