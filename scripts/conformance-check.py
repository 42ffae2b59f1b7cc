#!/usr/bin/env python3
"""Check docs/conformance.md against the spec id lists and the Rust tests.

Run from the repository root (Python 3.11, standard library only):

    python3 scripts/conformance-check.py [--results cargo-test.log] [-v]

It fails (exit 1) when
  * an id of docs/spec-ids-v311.txt or docs/spec-ids-v5.txt has no row in the table;
  * a row is not one of the ids of those lists and not a deviation row (`dev:NAME`);
  * a row marked "yes" in the Applies column names no test;
  * a named test (`path/to/file.rs::fn_name`) does not exist: no `fn fn_name` preceded by
    `#[test]` in that file;
  * a named test does not cite the row's id, either in its name or in the attributes and doc
    comments directly above it (see `cites()` below); a mention anywhere else does not count.

With --results, the output of `cargo test` (lines `test NAME ... ok|FAILED|ignored`) is
compared with the Status column: a row whose tests all passed should say pass, one with a
failed test fail. Mismatches are reported as warnings (the table records what was seen when
it was written; a rerun may differ while work is in progress).

How a test cites an id:
  * in its name: `mqtt_` followed by exactly the four numbers of the id, then the end of the
    name or `_` and a non-digit (`..._mqtt_3_1_2_24`, `..._mqtt_3_1_2_24_and_more`). The
    version is v5 when the name has a `v5` word (`v5_...`, `..._v5_...`) and no `v311` word,
    v311 when it has a `v311` word and no `v5` word, and v311 when it has neither (3.1.1 is
    the suite's default protocol). A name with both words cites through its name for neither.
  * in a doc comment or attribute directly above it (the run of `///`, `#[...]` and blank
    lines between the previous item and the `fn`): `v311:[MQTT-3.1.2-24]` or
    `v5:[MQTT-3.1.2-24]`. The prefix holds for the further bracketed ids on the same line until
    another prefix (`/// v311:[MQTT-3.3.1-5]/[MQTT-3.3.1-6], v5:[MQTT-3.3.1-5]`).
    Plain `//` comments do not count.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field

ID_FILES = ("docs/spec-ids-v311.txt", "docs/spec-ids-v5.txt")
TABLE = "docs/conformance.md"
SOURCE_ROOTS = ("src", "tests")

ID_RE = re.compile(r"^(v311|v5):MQTT-(\d+)\.(\d+)\.(\d+)-(\d+)$")
DEV_RE = re.compile(r"^dev:[A-Za-z0-9_.-]+$")
TEST_REF_RE = re.compile(r"`?([A-Za-z0-9_./-]+\.rs)::([A-Za-z_][A-Za-z0-9_]*)`?")
NAME_CITE_RE = re.compile(r"mqtt_(\d+)_(\d+)_(\d+)_(\d+)(?=$|_[^0-9])")
DOC_CITE_RE = re.compile(r"(v311|v5):|\[MQTT-(\d+)\.(\d+)\.(\d+)-(\d+)\]")
FN_RE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class Test:
    path: str
    name: str
    line: int
    cited: set[str] = field(default_factory=set)


@dataclass
class Row:
    line: int
    rid: str
    binds: str
    applies: str
    tests: list[tuple[str, str]]
    status: str


def load_ids() -> list[str]:
    ids: list[str] = []
    for path in ID_FILES:
        with open(path, encoding="utf-8") as f:
            for n, raw in enumerate(f, 1):
                s = raw.strip()
                if not s or s.startswith("#"):
                    continue
                if not ID_RE.match(s):
                    sys.exit(f"{path}:{n}: not an id: {s!r}")
                ids.append(s)
    return ids


def name_citations(name: str) -> set[str]:
    words = set(name.split("_"))
    v5, v311 = "v5" in words, "v311" in words
    if v5 and v311:
        return set()
    version = "v5" if v5 else "v311"
    return {f"{version}:MQTT-{a}.{b}.{c}-{d}" for a, b, c, d in NAME_CITE_RE.findall(name)}


def doc_citations(lines: list[str]) -> set[str]:
    out: set[str] = set()
    for line in lines:
        version = None
        for m in DOC_CITE_RE.finditer(line):
            if m.group(1):
                version = m.group(1)
            elif version:
                out.add(f"{version}:MQTT-{m.group(2)}.{m.group(3)}.{m.group(4)}-{m.group(5)}")
    return out


def scan_tests() -> dict[tuple[str, str], Test]:
    """Every `#[test]` fn of the Rust sources, with the ids it cites."""
    tests: dict[tuple[str, str], Test] = {}
    for root in SOURCE_ROOTS:
        for dirpath, _dirs, files in os.walk(root):
            for fname in sorted(files):
                if not fname.endswith(".rs"):
                    continue
                path = os.path.join(dirpath, fname).replace(os.sep, "/")
                with open(path, encoding="utf-8") as f:
                    lines = f.read().splitlines()
                for i, line in enumerate(lines):
                    m = FN_RE.match(line)
                    if not m:
                        continue
                    # The run of attributes, doc comments, plain comments and blank lines
                    # directly above the fn.
                    above: list[str] = []
                    j = i - 1
                    while j >= 0:
                        s = lines[j].strip()
                        if s.startswith(("#[", "//")) or s == "" or s.endswith(")]"):
                            above.append(s)
                            j -= 1
                            continue
                        break
                    if not any(re.match(r"#\[(?:\w+::)*test\b", s) for s in above):
                        continue
                    counted = [s for s in above if s.startswith(("///", "#["))]
                    t = Test(path, m.group(1), i + 1)
                    t.cited = name_citations(t.name) | doc_citations(counted)
                    tests[(path, t.name)] = t
    return tests


def split_row(line: str) -> list[str]:
    cells = line.strip().strip("|").split("|")
    return [c.strip() for c in cells]


def load_table() -> list[Row]:
    rows: list[Row] = []
    header: list[str] | None = None
    with open(TABLE, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.lstrip().startswith("|"):
                header = None if not line.strip() else header
                continue
            cells = split_row(line)
            if header is None:
                header = [c.lower() for c in cells]
                continue
            if all(set(c) <= set("-: ") for c in cells):
                continue
            if "id" not in header:
                continue
            rec = dict(zip(header, cells))
            rid = rec.get("id", "").strip("` ")
            if not (ID_RE.match(rid) or DEV_RE.match(rid)):
                continue
            tests = TEST_REF_RE.findall(rec.get("tests", ""))
            rows.append(
                Row(
                    line=n,
                    rid=rid,
                    binds=rec.get("binds", ""),
                    applies=rec.get("applies", "").lower(),
                    tests=tests,
                    status=rec.get("status", "").lower(),
                )
            )
    return rows


def load_results(path: str) -> dict[str, str]:
    """Test name -> ok / FAILED / ignored, from `cargo test` output (names may repeat across
    binaries; a failure anywhere wins)."""
    res: dict[str, str] = {}
    pat = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)")
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = pat.match(line)
            if m:
                name = m.group(1).rsplit("::", 1)[-1]
                if res.get(name) != "FAILED":
                    res[name] = m.group(2)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", help="output of `cargo test` to compare with the Status column")
    ap.add_argument("-v", "--verbose", action="store_true", help="list untested applicable ids")
    args = ap.parse_args()

    ids = load_ids()
    tests = scan_tests()
    rows = load_table()
    errors: list[str] = []
    warnings: list[str] = []

    by_id: dict[str, Row] = {}
    for r in rows:
        if r.rid in by_id:
            errors.append(f"{TABLE}:{r.line}: second row for {r.rid}")
        by_id[r.rid] = r
    known = set(ids)
    for r in rows:
        if ID_RE.match(r.rid) and r.rid not in known:
            errors.append(f"{TABLE}:{r.line}: {r.rid} is not in {' or '.join(ID_FILES)}")
    for i in ids:
        if i not in by_id:
            errors.append(f"{i}: no row in {TABLE}")

    results = load_results(args.results) if args.results else None
    applicable = covered = 0
    untested: list[str] = []
    for r in rows:
        applies = r.applies.startswith("yes")
        if applies and ID_RE.match(r.rid):
            applicable += 1
        if applies and not r.tests:
            errors.append(f"{TABLE}:{r.line}: {r.rid} applies but names no test")
            untested.append(r.rid)
        good = 0
        for path, name in r.tests:
            t = tests.get((path, name))
            if t is None:
                errors.append(f"{TABLE}:{r.line}: {r.rid}: no #[test] fn {name} in {path}")
                continue
            if ID_RE.match(r.rid) and r.rid not in t.cited:
                errors.append(
                    f"{TABLE}:{r.line}: {r.rid}: {path}::{name} does not cite it in its name, "
                    f"attributes or doc comment (cites: {', '.join(sorted(t.cited)) or 'nothing'})"
                )
                continue
            good += 1
        if applies and ID_RE.match(r.rid) and r.tests and good == len(r.tests):
            covered += 1
        if results is not None and r.tests:
            seen = [results.get(n) for _, n in r.tests]
            if "FAILED" in seen and not r.status.startswith("fail"):
                warnings.append(f"{TABLE}:{r.line}: {r.rid}: a test failed, status says {r.status!r}")
            elif seen and all(s == "ok" for s in seen) and not r.status.startswith("pass"):
                warnings.append(f"{TABLE}:{r.line}: {r.rid}: tests passed, status says {r.status!r}")
            elif None in seen:
                missing = [n for (_, n), s in zip(r.tests, seen) if s is None]
                warnings.append(f"{TABLE}:{r.line}: {r.rid}: no result for {', '.join(missing)}")

    statuses: dict[str, int] = {}
    for r in rows:
        if ID_RE.match(r.rid):
            key = r.status.split()[0] if r.status else "(none)"
            statuses[key] = statuses.get(key, 0) + 1

    for e in errors:
        print("error:", e)
    for w in warnings:
        print("warning:", w)
    n311 = sum(1 for i in ids if i.startswith("v311:"))
    print(
        f"ids: {len(ids)} (v311 {n311}, v5 {len(ids) - n311}); rows: {len(rows)} "
        f"({sum(1 for r in rows if DEV_RE.match(r.rid))} deviations); applicable: {applicable}; "
        f"covered: {covered}; applicable without a test: {len(untested)}; "
        f"tests found: {len(tests)}"
    )
    print("status column: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    if args.verbose and untested:
        print("untested: " + " ".join(untested))
    print("FAILED" if errors else "OK", f"({len(errors)} errors)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
