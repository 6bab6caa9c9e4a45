"""Merge pytest JUnit XML files into one <testsuites> document.

    python3 -m ci.merge_junit OUT.xml IN.xml [IN.xml ...]

A missing or unreadable input (a run killed at its time cap writes none)
becomes an empty <testsuite> carrying an <error>, so the merged file still
says that part did not report. Exit status 0.
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def merge(inputs: list[Path]) -> ET.Element:
    root = ET.Element("testsuites")
    for path in inputs:
        try:
            doc = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as exc:
            suite = ET.SubElement(root, "testsuite", name=path.stem, tests="1", errors="1", failures="0")
            case = ET.SubElement(suite, "testcase", classname="ci.merge_junit", name=path.stem)
            ET.SubElement(case, "error", message=f"no JUnit report: {exc}")
            continue
        suites = [doc] if doc.tag == "testsuite" else list(doc)
        for suite in suites:
            suite.set("name", f"{path.stem}:{suite.get('name', 'pytest')}")
            root.append(suite)
    return root


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args and args[0] in ("-h", "--help") else 2
    ET.ElementTree(merge([Path(p) for p in args[1:]])).write(args[0], encoding="utf-8", xml_declaration=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
