#!/usr/bin/env python3
"""Rewrites the code block after each `<!-- example: PATH -->` marker in docs/*.md with the
file at PATH, so the documentation shows the examples the tests compile and run.
tests/cli/docs_examples_test.cpp fails when the two differ."""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKER = re.compile(r"(<!-- example: (\S+) -->\n)(```cpp\n.*?```\n)?", re.S)


def block(path: str) -> str:
    return "```cpp\n" + (ROOT / path).read_text() + "```\n"


def main() -> int:
    for doc in sorted((ROOT / "docs").glob("*.md")):
        text = doc.read_text()
        synced = MARKER.sub(lambda m: m.group(1) + block(m.group(2)), text)
        if synced != text:
            doc.write_text(synced)
            print(f"updated {doc.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
