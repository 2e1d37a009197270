#!/usr/bin/python3
"""liblathe.so exports what include/lathe/ declares and nothing else.

Usage: check_exports.py LIBLATHE_SO INCLUDE_DIR

Reads the dynamic symbol table (nm -DC --defined-only) and, for every exported symbol in namespace
lathe, checks the name it is reached by: lathe::X (a function or variable) must be declared in a
public header, and lathe::X::Y (a member, or a nested namespace) needs X to be a class, struct,
enum or namespace that a public header declares. Also checks that the public entry points are
there and that known private helpers are not. Prints one line per problem and a closing
"N passed, N failed" line.
"""
import re
import subprocess
import sys
from pathlib import Path


def public_code(include_dir):
    """The public headers' text without comments and string literals."""
    text = ""
    for header in sorted(Path(include_dir).rglob("*.h")):
        code = header.read_text()
        code = re.sub(r"//[^\n]*", "", code)
        code = re.sub(r'"(\\.|[^"\\])*"', '""', code)
        text += code + "\n"
    return text


def declared_scopes(code):
    scopes = set(re.findall(r"\b(?:class|struct|enum class|enum)\s+(\w+)", code))
    for nested in re.findall(r"\bnamespace\s+([\w:]+)", code):
        scopes.update(nested.split("::"))
    return scopes


def lathe_path(symbol):
    """['X', 'Y', ...] for lathe::X::Y..., template arguments and the signature removed."""
    depth, plain = 0, ""
    for c in symbol:
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif depth == 0:
            plain += c
    # A function type's name (typeinfo of a std::function's target) reads "R (Args...)".
    plain = re.sub(r"\[abi:\w+\]", "", plain.split("(")[0]).strip()
    return plain.split("::")[1:]


def main(library, include_dir):
    out = subprocess.run(["nm", "-DC", "--defined-only", library], check=True, capture_output=True, text=True).stdout
    symbols = [line.split(" ", 2)[2] for line in out.splitlines() if line.count(" ") >= 2]
    # Only names of lathe's own (typeinfo, vtables and guard variables are named after their class).
    names = []
    for symbol in symbols:
        for prefix in ("typeinfo name for ", "typeinfo for ", "vtable for ", "guard variable for "):
            if symbol.startswith(prefix):
                symbol = symbol[len(prefix):]
        if symbol.startswith("lathe::"):
            names.append(symbol)
    code = public_code(include_dir)
    scopes = declared_scopes(code)
    failures = []
    for name in names:
        path = lathe_path(name)
        if not path or "(anonymous namespace)" in name:
            failures.append(f"exported but private: {name}")
        elif len(path) == 1 and not re.search(r"\b" + re.escape(path[0]) + r"\b", code):
            failures.append(f"exported but not declared in include/lathe/: {name}")
        elif len(path) > 1 and path[0] not in scopes:
            failures.append(f"exported but {path[0]} is not a public class or namespace: {name}")
    exported = set(names)
    for required in ("lathe::load_external_plugins", "lathe::current_plugin_origin", "lathe::Trainer::train"):
        if not any(n.startswith(required) for n in exported):
            failures.append(f"not exported: {required}")
    for line in failures:
        print(line)
    print(f"{len(names) - len([f for f in failures if f.startswith('exported')])} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
