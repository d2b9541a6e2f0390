#!/usr/bin/env python3
"""Architecture check of the Rust code (rough, text-based), run by `make lint`: exits 1 when a
module imports in a circle, when a file imports the mod.rs/lib.rs of a folder that contains it
(an arrow running back up: the wiring must sit above what it wires), or when a function outside
the test modules of the operator (src/) is longer than MAX_FN_LINES. See docs/controller.md.

A file's imports are the `crate::`, `super::` and `self::` paths in its `use` items and inline
paths, resolved to the deepest existing file. A folder's mod.rs re-exporting its children is the
folder's door, not a dependency, so edges from mod.rs/lib.rs/main.rs to their own descendants
are ignored. Usage: hack/arch_check.py [ROOT]
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "."
files = []
for d, dirs, fs in os.walk(root):
    dirs[:] = [x for x in dirs if x not in ("target", ".git", "tests", "benches", "examples", "node_modules")]
    files += [os.path.join(d, f) for f in fs if f.endswith(".rs")]


def crate_root(path):
    d = os.path.dirname(path)
    while True:
        if any(os.path.exists(os.path.join(d, f)) for f in ("lib.rs", "main.rs")):
            return d
        if d in (root, "/", ""):
            return None
        d = os.path.dirname(d)


def module_of(path, croot):
    rel = os.path.relpath(path, croot)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return [x for x in rel if x]


def resolve(croot, segs):
    best = None
    for i in range(len(segs), -1, -1):
        base = os.path.join(croot, *segs[:i]) if i else croot
        for cand in (base + ".rs", os.path.join(base, "mod.rs")) if i else (os.path.join(croot, "lib.rs"), os.path.join(croot, "main.rs")):
            if os.path.exists(cand):
                return cand
    return best


def expand(tree):
    """Expand a use tree like `a::{b::c, d::{e, f}}` into flat paths."""
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"^(.*?)::\{(.*)\}$", tree)
    if not m:
        return [tree]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur); cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    return [prefix + "::" + q for part in parts if part for q in expand(part)]


strip = re.compile(r"//[^\n]*|#\[cfg\(test\)\]\s*mod\s+tests\s*\{.*", re.S)
edges = {}
for f in files:
    croot = crate_root(f)
    if not croot:
        continue
    me = module_of(f, croot)
    text = strip.sub("", open(f, errors="replace").read())
    out = set()
    paths = []
    for u in re.finditer(r"\buse\s+([^;]+);", text):
        paths += [p for p in expand(u.group(1)) if re.match(r"(crate|super|self)::", p)]
    text += "\n" + "\n".join(paths)
    for m in re.finditer(r"\b(crate|super|self)((?:::\w+)+)", text):
        head, segs = m.group(1), m.group(2).strip(":").split("::")
        if head == "crate":
            full = segs
        elif head == "super":
            full = me[:-1]
            while segs and segs[0] == "super":
                full, segs = full[:-1], segs[1:]
            full = full + segs
        else:
            full = me + segs
        t = resolve(croot, full)
        if t and t != f:
            # a folder's door re-exporting its own children is not a dependency
            if os.path.basename(f) in ("mod.rs", "lib.rs", "main.rs") and os.path.dirname(t).startswith(os.path.dirname(f)):
                continue
            out.add(t)
    edges[f] = out


MAX_FN_LINES = 80


def cycles():
    """Strongly connected components of more than one file (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1
        stack.append(v); on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(os.path.relpath(c, root) for c in comp))

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def long_functions():
    """(lines, file, line, name) of the operator's (src/) fn items longer than MAX_FN_LINES, test
    modules excluded; the simulator (sim/) is a test double and is not held to it."""
    rows = []
    operator = os.path.join(root, "src") + os.sep
    for path in (p for p in files if p.startswith(operator)):
        lines = open(path, errors="replace").read().split("\n")
        i = 0
        while i < len(lines):
            if re.match(r"\s*#\[cfg\(test\)\]", lines[i]) and i + 1 < len(lines) and re.match(r"\s*mod \w+ \{", lines[i + 1]):
                break  # the test module sits at the end by convention
            m = re.match(r"\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?fn\s+(\w+)", lines[i])
            if m:
                depth, started, j = 0, False, i
                while j < len(lines):
                    s = re.sub(r'"(\\.|[^"\\])*"', '""', lines[j])
                    s = re.sub(r"//.*", "", s)
                    if not started and ";" in s and "{" not in s:
                        break
                    depth += s.count("{") - s.count("}")
                    started = started or "{" in s
                    if started and depth <= 0:
                        break
                    j += 1
                if started:
                    if j - i + 1 > MAX_FN_LINES:
                        rows.append((j - i + 1, os.path.relpath(path, root), i + 1, m.group(5)))
                    i = j
            i += 1
    return sorted(rows, reverse=True)


ups = sorted(
    (os.path.relpath(f, root), os.path.relpath(t, root))
    for f, ts in edges.items()
    for t in ts
    if os.path.basename(t) in ("mod.rs", "lib.rs") and os.path.dirname(f).startswith(os.path.dirname(t)) and f != t
)
found = cycles()
longs = long_functions()
for c in found:
    print("cycle: " + " <-> ".join(c))
for f, t in ups:
    print(f"up: {f} -> {t}")
for n, p, ln, name in longs:
    print(f"long: {p}:{ln} {name} ({n} lines)")
print(f"{len(found)} import cycles, {len(ups)} arrows back up, {len(longs)} functions over {MAX_FN_LINES} lines, among {len(files)} files")
sys.exit(1 if found or ups or longs else 0)
