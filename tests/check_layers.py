#!/usr/bin/env python3
"""check_layers.py - the layering of reap, checked (docs/design.md section 0).

Every folder has one job and may use only the folders below it (the RULES table; an
arrow is an #include of a folder's header or a CMake link to its library). This script
fails, naming the file and line or the target and the rule, when

  (a) a source or header of one folder includes a header of a folder it may not use;
  (b) a CMake library or executable links a library of a folder it may not use (the
      link graph as CMake itself records it: <build>/layers_links.txt, written by the
      root CMakeLists.txt at configure time), or is defined in the root CMakeLists.txt
      instead of its folder's (judged then by the folder of its sources);
  (c) the folders depend on each other in a cycle (includes and links together);
  (d) source files depend on each other in a cycle: file A calls a function or uses a
      global that file B defines while B (directly or through other files) uses one of
      A's; each step is shown with the header that declares the symbol. Literal cycles
      of #include between headers are reported the same way. (Definitions and uses are
      read from the text: top-level non-static functions and globals, identifiers
      outside comments and strings - simple, and exact enough for this code's style.)

tests/, bench/, tests/fuzz/, scripts/ and deploy/ may use anything and are not checked.
A folder that holds C sources but has no row in RULES is an error (a new folder must say
where it sits).

Usage: check_layers.py [--build BUILD_DIR] [--self-test] [SOURCE_ROOT]
  --self-test  first run the checker on small synthetic trees (one clean, one per rule
               broken) and fail unless it accepts the clean one and names the file,
               line and rule in each broken one; then check SOURCE_ROOT.
Standard library only (runs with any Python 3.8+).
"""
import argparse
import os
import re
import sys
import tempfile

# ---- the rules (docs/design.md section 0) --------------------------------------------
# unit -> the units it may use. model/cuda is the CUDA backend (and model/nocuda its
# stand-in when the toolkit is absent); model/gen the test-checkpoint generator, a tool
# that only tests and benchmarks use. Folders above model may use model/cuda.
ABOVE_MODEL = {"model", "model/cuda"}
RULES = {
    "common": set(),
    "proto": set(),
    "model": {"common"},
    "model/cuda": {"model", "common"},
    "model/gen": {"model", "common"},
    "store": ABOVE_MODEL | {"common", "proto"},
    "rpc": {"common", "proto"},
    "service": {"rpc", "store", "common", "proto"} | ABOVE_MODEL,
    "scorer": {"service", "rpc", "store", "common", "proto"} | ABOVE_MODEL,
    "pruner": {"service", "rpc", "store", "common", "proto"} | ABOVE_MODEL,
    "client": {"pruner", "rpc", "store", "common", "proto"} | ABOVE_MODEL,
}
EXEMPT = {"tests", "bench", "scripts", "deploy", "docs", "build"}
SUBUNITS = {"model/cpu": "model", "model/cuda": "model/cuda", "model/nocuda": "model/cuda",
            "model/gen": "model/gen"}
SRC_EXT = (".c", ".cu")
HDR_EXT = (".h", ".cuh")


def unit_of(rel):
    """The layer unit of a repository-relative path, or None (exempt / top level)."""
    parts = rel.split("/")
    if len(parts) < 2 or parts[0] in EXEMPT or parts[0].startswith(("build", ".")):
        return None
    if len(parts) >= 3:
        sub = parts[0] + "/" + parts[1]
        if sub in SUBUNITS:
            return SUBUNITS[sub]
    return parts[0]


def allowed(a, b):
    return a == b or b in RULES.get(a, set())


# ---- reading C ---------------------------------------------------------------------
INCLUDE_RE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')
IDENT_RE = re.compile(r"[A-Za-z_]\w*")
KEYWORDS = {"if", "for", "while", "switch", "return", "sizeof", "do", "else", "case",
            "defined", "_Static_assert", "__attribute__", "typeof", "__typeof__"}


def strip_c(text):
    """Comments, string and character literals and preprocessor lines blanked out
    (newlines kept, so line numbers stay right)."""
    out, i, n = [], 0, len(text)
    bol = True
    while i < n:
        c = text[i]
        if bol and c == "#" or (bol and c in " \t" and text[i:].lstrip(" \t")[:1] == "#"):
            j = i
            while j < n:            # a directive, with its continuation lines
                k = text.find("\n", j)
                if k < 0:
                    k = n
                if k > 0 and text[k - 1] == "\\":
                    out.append("\n")
                    j = k + 1
                    continue
                j = k
                break
            i = j
            bol = False
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
            continue
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(c + " " * 0 + c)
            i = j + 1
            continue
        out.append(c)
        bol = c == "\n" or (bol and c in " \t")
        i += 1
    return "".join(out)


def definitions(text):
    """Names of the non-static functions and global variables a C source defines, with
    the line of each definition."""
    s = strip_c(text)
    defs = {}
    head, pos = [], []          # the current top-level statement (brace bodies as "{}")
    depth, body, linkage = 0, False, 0      # linkage: open extern "C" { blocks
    for i, c in enumerate(s):
        if depth == 0 and c not in "{};":
            head.append(c)
            pos.append(i)
            continue
        if c == "{" and depth == 0 and re.search(r'extern\s*""\s*$', "".join(head)):
            linkage += 1                    # extern "C" { ... }: its contents are top level
            head, pos = [], []
            continue
        if c == "}" and depth == 0 and linkage:
            linkage -= 1
            head, pos = [], []
            continue
        if c == "{":
            if depth == 0:
                h = "".join(head)
                m = re.search(r"([A-Za-z_]\w*)\s*\((?:[^()]|\([^()]*\))*\)\s*$", h)
                body = bool(m) and m.group(1) not in KEYWORDS
                if body and "static" not in IDENT_RE.findall(h) and m.group(1) != "main":
                    defs.setdefault(m.group(1), s.count("\n", 0, pos[m.start(1)]) + 1)
                if not body:
                    head.append("{")
                    pos.append(i)
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                if body:
                    head, pos, body = [], [], False
                else:
                    head.append("}")
                    pos.append(i)
        elif c == ";" and depth == 0:
            h = "".join(head)
            words = IDENT_RE.findall(h)
            before = h.split("=")[0].rstrip()
            before_nb = re.sub(r"(\[[^\]]*\]\s*)+$", "", before).rstrip()
            m = re.search(r"([A-Za-z_]\w*)$", before_nb)
            decl_only = (words[:1] and words[0] in ("struct", "enum", "union")
                         and len(IDENT_RE.findall(before)) == 2 and "{" not in before)
            if (m and not set(words) & {"static", "typedef", "extern"} and "(" not in before
                    and not before.endswith("}") and not decl_only and len(words) > 1
                    and m.group(1) not in KEYWORDS):
                defs.setdefault(m.group(1), s.count("\n", 0, pos[m.start(1)]) + 1)
            head, pos = [], []
    return defs


def identifiers(text):
    """Each identifier of a source (comments, strings, directives removed) with the line
    of its first use."""
    s = strip_c(text)
    first = {}
    for ln, line in enumerate(s.split("\n"), 1):
        for w in IDENT_RE.findall(line):
            first.setdefault(w, ln)
    return first


# ---- the tree ----------------------------------------------------------------------
class Tree:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.files = []                    # repository-relative paths of C files
        for d, dirs, names in os.walk(self.root):
            rel_d = os.path.relpath(d, self.root)
            dirs[:] = sorted(x for x in dirs if not x.startswith(".")
                             and not (rel_d == "." and (x in EXEMPT or x.startswith("build"))))
            for name in sorted(names):
                if name.endswith(SRC_EXT + HDR_EXT):
                    self.files.append(os.path.normpath(os.path.join(rel_d, name)))
        self.by_name = {}                  # include spelling -> [paths]
        for f in self.files:
            if f.endswith(HDR_EXT):
                parts = f.split("/")
                for k in range(len(parts)):
                    self.by_name.setdefault("/".join(parts[k:]), []).append(f)
        self._text = {}

    def text(self, rel):
        if rel not in self._text:
            with open(os.path.join(self.root, rel), encoding="utf-8", errors="replace") as fh:
                self._text[rel] = fh.read()
        return self._text[rel]

    def resolve(self, including, name):
        """The header an #include "name" in `including` means, or None (a system or
        generated header; *.pb-c.h files are proto/'s generated code)."""
        local = os.path.normpath(os.path.join(os.path.dirname(including), name))
        if local in self.files:
            return local
        hits = self.by_name.get(name, [])
        if len(hits) == 1:
            return hits[0]
        if not hits and name.endswith(".pb-c.h"):
            return "proto/" + os.path.basename(name)
        return hits[0] if hits else None

    def includes(self, rel):
        for ln, line in enumerate(self.text(rel).split("\n"), 1):
            m = INCLUDE_RE.match(line)
            if m:
                yield ln, m.group(1), self.resolve(rel, m.group(1))


# ---- the checks --------------------------------------------------------------------
def check_units(tree, errors):
    units = {unit_of(f) for f in tree.files} - {None}
    for u in sorted(units - set(RULES)):
        errors.append(f"{u}/: folder has no row in the layer table (tests/check_layers.py "
                      f"RULES, docs/design.md section 0): say which folders it may use")


def check_includes(tree, errors, edges):
    for f in tree.files:
        a = unit_of(f)
        if a is None:
            continue
        for ln, name, h in tree.includes(f):
            b = unit_of(h) if h else None
            if b is None or b == a:
                continue
            edges.setdefault((a, b), f"{f}:{ln} includes {h}")
            if not allowed(a, b):
                errors.append(f"{f}:{ln}: includes \"{name}\" ({h}): folder {a}/ may not use "
                              f"{b}/ (rule (a): {a} -> {rule_text(a)})")


def rule_text(a):
    r = sorted(RULES.get(a, set()))
    return ", ".join(r) if r else "nothing of the project"


def read_links(build):
    """[(target, type, source_dir, [linked items])] from <build>/layers_links.txt."""
    path = os.path.join(build, "layers_links.txt")
    if not os.path.exists(path):
        raise SystemExit(f"check_layers: {path} is missing: configure the build with the "
                         f"project's root CMakeLists.txt (it writes the link graph there)")
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            parts = line.split("\t")
            field = lambda k: [x for x in parts[k].split(";") if x] if len(parts) > k else []
            out.append((parts[0], parts[1], parts[2], field(3), field(4)))
    return out


def link_line(root, rel, name, dep):
    """"<folder>/CMakeLists.txt:<line>:" of the target_link_libraries that names `dep`
    for `name` (the line number left out when it is not found literally)."""
    cm = "CMakeLists.txt" if rel == "." else f"{rel}/CMakeLists.txt"
    path = os.path.join(root, rel, "CMakeLists.txt")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return f"{cm}:"
    for m in re.finditer(r"target_link_libraries\(\s*([^\s)]+)([^)]*)\)", text):
        if m.group(1) in (name, "${name}") and dep in m.group(2).split():
            return f"{cm}:{text.count(chr(10), 0, m.start()) + 1}:"
    return f"{cm}:"


def check_links(tree, links, errors, edges):
    where = {}
    for name, typ, sdir, _, srcs in links:
        rel = os.path.relpath(sdir, tree.root)
        unit = unit_of(rel + "/x") if not rel.startswith("..") else None
        if rel == ".":                      # judged by its sources (and reported below)
            units = {unit_of(os.path.relpath(os.path.join(sdir, x), tree.root)) for x in srcs}
            unit = units.pop() if len(units) == 1 else None
        where[name] = (unit, rel)
    for name, typ, sdir, deps, _ in links:
        a, rel = where[name]
        if rel == ".":
            errors.append(f"CMakeLists.txt: {typ.lower()} {name} is defined in the root "
                          f"CMakeLists.txt: define it in its folder's CMakeLists.txt, whose "
                          f"place in the layers says what it may link (rule (b))")
        if a is None:
            continue
        for d in deps:
            d = re.sub(r"^\$<LINK_ONLY:(.*)>$", r"\1", d)
            if d not in where:
                continue
            b, brel = where[d]
            if b is None or b == a:
                continue
            at = link_line(tree.root, rel, name, d)
            edges.setdefault((a, b), f"{at} {name} links {d}")
            if not allowed(a, b):
                errors.append(f"{at} {typ.lower()} {name} links {d} "
                              f"({b}/): folder {a}/ may not use {b}/ (rule (b): "
                              f"{a} -> {rule_text(a)})")


def sccs(nodes, succ):
    """Strongly connected components (Tarjan, iterative), each sorted."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(succ.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(succ.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1 or v in succ.get(v, ()):
                        out.append(sorted(comp))
    return out


def cycle_in(comp, succ):
    """One cycle through the component's first node, as a node list (shortest by BFS)."""
    start, members = comp[0], set(comp)
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(succ.get(v, ())):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return list(reversed(path)) + [start]
                if w in members and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp + [comp[0]]


def check_folder_cycles(edges, errors):
    succ = {}
    for a, b in edges:
        succ.setdefault(a, set()).add(b)
    nodes = set(succ) | {b for _, b in edges}
    for comp in sccs(nodes, succ):
        cyc = cycle_in(comp, succ)
        steps = "; ".join(f"{x} -> {y} ({edges[(x, y)]})" for x, y in zip(cyc, cyc[1:]))
        errors.append(f"folders {' <-> '.join(comp)}: cycle between folders (rule (c)): {steps}")


def check_file_cycles(tree, errors):
    srcs = [f for f in tree.files if unit_of(f) and f.endswith(SRC_EXT)]
    hdrs = [f for f in tree.files if unit_of(f) and f.endswith(HDR_EXT)]
    owner = {}                              # symbol -> the sources that define it
    for f in srcs:                          # (model/cuda and model/nocuda: both)
        for sym in definitions(tree.text(f)):
            owner.setdefault(sym, []).append(f)
    declared = {}                           # symbol -> first header that names it
    for h in hdrs:
        for sym in identifiers(tree.text(h)):
            if sym in owner:
                declared.setdefault(sym, h)
    succ, why = {}, {}
    for f in srcs:
        for sym, ln in identifiers(tree.text(f)).items():
            for g in owner.get(sym, ()):
                if g == f or f in owner[sym]:
                    continue
                succ.setdefault(f, set()).add(g)
                why.setdefault((f, g), f"{f}:{ln} uses {sym} ({declared.get(sym, 'undeclared')}, "
                                       f"defined in {g})")
    for comp in sccs(set(srcs), succ):
        cyc = cycle_in(comp, succ)
        steps = "; ".join(why[(x, y)] for x, y in zip(cyc, cyc[1:]))
        errors.append(f"{' <-> '.join(comp)}: source files depend on each other in a cycle "
                      f"(rule (d)): {steps}")
    # literal #include cycles between headers
    hsucc, hwhy = {}, {}
    for h in hdrs:
        for ln, name, g in tree.includes(h):
            if g and g in hdrs:
                hsucc.setdefault(h, set()).add(g)
                hwhy[(h, g)] = f"{h}:{ln} includes {g}"
    for comp in sccs(set(hdrs), hsucc):
        cyc = cycle_in(comp, hsucc)
        errors.append(f"{' <-> '.join(comp)}: headers include each other in a cycle (rule (d)): "
                      + "; ".join(hwhy[(x, y)] for x, y in zip(cyc, cyc[1:])))


def check_rules_acyclic(errors):
    succ = {a: set(bs) for a, bs in RULES.items()}
    for comp in sccs(set(RULES), succ):
        errors.append(f"the layer table itself has a cycle: {' <-> '.join(comp)}")


def run(root, build):
    tree = Tree(root)
    errors, edges = [], {}
    check_rules_acyclic(errors)
    check_units(tree, errors)
    check_includes(tree, errors, edges)
    if build:
        check_links(tree, read_links(build), errors, edges)
    check_folder_cycles(edges, errors)
    check_file_cycles(tree, errors)
    return errors


# ---- self-test: the checker must be able to fail -------------------------------------
def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


CLEAN = {
    "common/util.h": "int util_add(int a, int b);\n",
    "common/util.c": '#include "util.h"\nint util_add(int a, int b) { return a + b; }\n',
    "model/stats.h": '#include "util.h"\nint stats_sum(int n);\n',
    "model/stats.c": '#include "stats.h"\nint stats_sum(int n) { return util_add(n, 1); }\n',
    "store/store.h": '#include "stats.h"\nint store_put(int n);\n',
    "store/store.c": ('#include "store.h"\n/* store_put calls stats_sum */\n'
                      'static int helper(void) { return 1; }\n'
                      'int store_put(int n) { return stats_sum(n) + helper(); }\n'),
    "model/cuda/k.cu": ('extern "C" {\n#include "stats.h"\n}\n'
                        'extern "C" int k_run(void) { return stats_sum(1); }\n'),
    "tests/test_store.c": '#include "store.h"\n#include "genmodel.h"\nint main(void) { return store_put(1); }\n',
}


def self_test(build):
    """Run the checker on synthetic trees; return a list of failures of the checker."""
    bad = []
    cases = [
        # (files to add, expected fragments of one message)
        ({"model/engine.c": '#include "stats.h"\n\n#include "store.h"\nint engine_run(void) { return store_put(2); }\n'},
         ["model/engine.c:3:", '"store.h"', "folder model/ may not use store/", "rule (a)"]),
        ({"model/gen/gm.c": '#include "stats.h"\nint gm(void) { return 0; }\n',
          "store/use_gen.c": '#include "gen/gm.h"\nint ug(void) { return gm(); }\n',
          "model/gen/gm.h": 'int gm(void);\n'},
         ["store/use_gen.c:1:", "folder store/ may not use model/gen/", "rule (a)"]),
        ({"newdir/x.c": "int x_f(void) { return 0; }\n"},
         ["newdir/: folder has no row in the layer table"]),
        ({"store/a.h": "int a_f(void);\n",
          "store/a.c": '#include "a.h"\n#include "b.h"\nint a_f(void) { return b_g(); }\nint a_h(void) { return 0; }\n',
          "store/b.h": "int b_g(void);\n",
          "store/b.c": '#include "b.h"\n#include "a.h"\nint b_g(void) { return a_h(); }\n'},
         ["store/a.c <-> store/b.c", "rule (d)", "store/a.c:3 uses b_g (store/b.h, defined in store/b.c)",
          "store/b.c:3 uses a_h"]),
        ({"model/cuda/u.cu": 'extern "C" {\nint u_up(void) { return k_run(); }\n}\n',
          "model/cuda/k.cu": ('extern "C" {\n#include "stats.h"\n}\n'
                              'extern "C" int k_run(void) { return u_up(); }\n')},
         ["model/cuda/k.cu <-> model/cuda/u.cu", "rule (d)", "model/cuda/u.cu:2 uses k_run"]),
        ({"model/x.h": '#include "y.h"\n', "model/y.h": '#include "x.h"\n'},
         ["model/x.h <-> model/y.h", "headers include each other", "model/x.h:1 includes model/y.h"]),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "clean")
        for rel, text in CLEAN.items():
            write(root, rel, text)
        errs = run(root, None)
        if errs:
            bad.append("the clean tree was rejected:\n  " + "\n  ".join(errs))
        for k, (extra, want) in enumerate(cases):
            root = os.path.join(tmp, f"case{k}")
            for rel, text in list(CLEAN.items()) + list(extra.items()):
                write(root, rel, text)
            errs = run(root, None)
            if not any(all(w in e for w in want) for e in errs):
                bad.append(f"case {k}: no message with {want}; got:\n  " + "\n  ".join(errs))
        # (b) and (c): a library of model/ that links store/'s library (a link upward and
        # a cycle model <-> store)
        root = os.path.join(tmp, "links")
        for rel, text in CLEAN.items():
            write(root, rel, text)
        write(root, "model/CMakeLists.txt", "add_library(reap_model STATIC stats.c)\n"
              "target_link_libraries(reap_model PUBLIC reap_common\n    reap_store)\n")
        bdir = os.path.join(tmp, "links-build")
        write(bdir, "layers_links.txt",
              f"reap_model\tSTATIC_LIBRARY\t{root}/model\treap_common;reap_store\n"
              f"reap_store\tSTATIC_LIBRARY\t{root}/store\treap_model\n"
              f"reap_common\tSTATIC_LIBRARY\t{root}/common\tm\n"
              f"test_x\tEXECUTABLE\t{root}/tests\treap_store\n"
              f"reap_gen\tSTATIC_LIBRARY\t{root}\treap_model;reap_store\tmodel/gen/g.c\n")
        errs = run(root, bdir)
        for want in (["model/CMakeLists.txt:2: static_library reap_model links reap_store",
                      "folder model/ may not use store/", "rule (b)"],
                     ["folders model <-> store: cycle between folders (rule (c))"],
                     ["static_library reap_gen is defined in the root CMakeLists.txt"],
                     ["CMakeLists.txt: static_library reap_gen links reap_store (store/): folder "
                      "model/gen/ may not use store/"]):
            if not any(all(w in e for w in want) for e in errs):
                bad.append(f"links: no message with {want}; got:\n  " + "\n  ".join(errs))
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", nargs="?", default=os.path.join(os.path.dirname(__file__), ".."))
    ap.add_argument("--build", help="build directory (for the CMake link graph)")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        bad = self_test(args.build)
        if bad:
            print("check_layers: SELF-TEST FAILED (the checker would miss a violation):")
            for b in bad:
                print("  " + b)
            return 1
        print("check_layers: self-test ok (a clean tree passes; each broken rule is named)")
    errs = run(args.root, args.build)
    if not args.build:
        print("check_layers: no --build given: the CMake link graph (rule (b)) is not checked")
    for e in errs:
        print("LAYER VIOLATION: " + e)
    if errs:
        print(f"check_layers: {len(errs)} violation(s); the rules are in docs/design.md "
              f"section 0 and RULES in tests/check_layers.py")
        return 1
    print("check_layers: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
