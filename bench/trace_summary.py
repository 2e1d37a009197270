#!/usr/bin/env python3
"""Operators by self time in a trace written by `train_bench --trace FILE`.

    bench/trace_summary.py FILE [TOP]

Self time is an event's duration minus the events nested inside it on the same thread, so the
column sums to the traced time without counting an operator and the operators it calls twice.
"""
import collections
import json
import sys


def summarise(events):
    by_thread = collections.defaultdict(list)
    for event in events:
        if event.get("ph") == "X":
            by_thread[event["tid"]].append(event)
    self_us, inclusive_us, calls = collections.Counter(), collections.Counter(), collections.Counter()
    traced_us = 0.0
    for thread_events in by_thread.values():
        thread_events.sort(key=lambda e: (e["ts"], -e["dur"]))
        open_events, nested_us = [], collections.Counter()
        for index, event in enumerate(thread_events):
            while open_events and thread_events[open_events[-1]]["ts"] + thread_events[open_events[-1]]["dur"] <= event["ts"]:
                open_events.pop()
            if open_events:
                nested_us[open_events[-1]] += event["dur"]
            else:
                traced_us += event["dur"]
            open_events.append(index)
        for index, event in enumerate(thread_events):
            self_us[event["name"]] += event["dur"] - nested_us[index]
            inclusive_us[event["name"]] += event["dur"]
            calls[event["name"]] += 1
    return traced_us, self_us, inclusive_us, calls


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    with open(sys.argv[1]) as file:
        traced_us, self_us, inclusive_us, calls = summarise(json.load(file))
    print(f"traced: {traced_us / 1e3:.1f} ms (top-level events, all threads)")
    print(f"{'self ms':>10} {'share':>6} {'incl ms':>10} {'calls':>7}  operator")
    for name, microseconds in self_us.most_common(top):
        print(f"{microseconds / 1e3:10.1f} {microseconds / traced_us:6.1%} {inclusive_us[name] / 1e3:10.1f} "
              f"{calls[name]:7d}  {name}")


if __name__ == "__main__":
    main()
