"""ci/memcheck_conformance.py without a GPU: its parsing of memcheck reports, the
chunking, the JUnit merge and the verdict, and one real chunk run through a stand-in
`compute-sanitizer` that only runs the command and prints memcheck's closing line."""
from __future__ import annotations

import stat
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "ci"))
import memcheck_conformance as mc  # noqa: E402

# Shaped like the H100 report of 2026-11-28 (compute-sanitizer 2025.x).
REPORT = """\
........========= Program hit cudaErrorMemoryAllocation (error 2) due to "out of memory" on CUDA API call to cudaMalloc.
=========     Saved host backtrace up to driver entry point at error
=========         Host Frame: c10::cuda::CUDACachingAllocator::Native::NativeCachingAllocator::allocate(unsigned long) [0x44beb] in libc10_cuda.so
========= Invalid __global__ read of size 2 bytes
=========     at decode_split_kernel+0x1a30
=========     Address 0x7f3a00001000 is out of bounds
========= Invalid __global__ read of size 16 bytes
=========     Address 0x7f3a00002000 is out of bounds
========= Program hit cudaErrorMemoryAllocation (error 2) due to "out of memory" on CUDA API call to cudaGetLastError.
F
========= ERROR SUMMARY: 1204 errors
========= ERROR SUMMARY: 1000 errors were not printed. Use --print-limit option to adjust the number of printed errors
"""


def _chunk(index: int, report: str, code: int | None = 0) -> mc.ChunkResult:
    return mc.ChunkResult(index, [f"conformance/test_x.py::t{index}"], 1.0, code, report, None)


def test_summary_counts_only_closing_lines() -> None:
    assert _chunk(0, REPORT).sanitizer_errors == 1204          # not 2204: "were not printed" is no count
    assert _chunk(0, "... 3 passed\n========= ERROR SUMMARY: 0 errors\n").sanitizer_errors == 0
    assert _chunk(0, "killed before the summary").sanitizer_errors is None


def test_error_kinds_fold_addresses_and_sizes() -> None:
    kinds = mc.error_kinds(REPORT)
    assert kinds == {'Program hit cudaErrorMemoryAllocation (error 2) due to "out of memory"': 2,
                     "Invalid __global__ read": 2}


def test_chunks_keep_files_together_and_bounded() -> None:
    ids = [f"a.py::t{i}" for i in range(5)] + ["b.py::u0"] + [f"a.py::late{i}" for i in range(2)]
    chunks = mc.chunk_node_ids(ids, 3)
    assert chunks == [["a.py::t0", "a.py::t1", "a.py::t2"], ["a.py::t3", "a.py::t4", "a.py::late0"],
                      ["a.py::late1"], ["b.py::u0"]]
    assert sorted(sum(chunks, [])) == sorted(ids)


def _junit(path: Path, cases: dict[str, str | None]) -> Path:
    suite = ET.Element("testsuite")
    for name, outcome in cases.items():
        case = ET.SubElement(suite, "testcase", name=name)
        if outcome:
            ET.SubElement(case, outcome, message="x")
    ET.ElementTree(ET.Element("testsuites")).getroot().append(suite)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path)
    return path


def test_merge_junit_sums_and_skips_missing(tmp_path) -> None:
    a = _junit(tmp_path / "a.xml", {"t1": None, "t2": "failure"})
    b = _junit(tmp_path / "b.xml", {"t3": "skipped", "t4": "error"})
    suite = mc.merge_junit([a, None, tmp_path / "gone.xml", b]).find("testsuite")
    assert [c.get("name") for c in suite.iter("testcase")] == ["t1", "t2", "t3", "t4"]
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("4", "1", "1", "1")


def test_verdict(tmp_path) -> None:
    ok = mc.merge_junit([_junit(tmp_path / "ok.xml", {"t1": None, "t2": None})])
    bad = mc.merge_junit([_junit(tmp_path / "bad.xml", {"t1": None, "t2": "failure"})])
    zero = "========= ERROR SUMMARY: 0 errors\n"
    clean, line = mc.verdict([_chunk(0, zero), _chunk(1, zero)], ok, planned=2)
    assert clean and "CLEAN (0 errors in 2 processes)" in line and "2 of 2 tests passed" in line
    assert not mc.verdict([_chunk(0, zero)], bad, planned=1)[0]                       # a failed test
    clean, line = mc.verdict([_chunk(0, zero), _chunk(1, REPORT)], ok, planned=2)
    assert not clean and "NOT CLEAN (1204 errors)" in line
    clean, line = mc.verdict([_chunk(0, zero)], ok, planned=3)                          # chunks never started
    assert not clean and "INCOMPLETE" in line and "2 not started" in line
    clean, line = mc.verdict([_chunk(0, zero, code=None), _chunk(1, "no summary")], ok, planned=2)
    assert not clean and "2 chunks without a memcheck summary" in line


def test_strip_backtraces_keeps_errors() -> None:
    text = mc.strip_backtraces(REPORT)
    assert "Host Frame" not in text and "Saved host backtrace" not in text
    assert mc.error_kinds(text) == mc.error_kinds(REPORT) and "ERROR SUMMARY: 1204 errors" in text


def test_parse_args_pytest_targets_and_bad_values(capsys) -> None:
    args = mc.parse_args(["outdir", "--parallel", "2", "--", "conformance/test_kernel_write_kv.py", "-k", "huge"])
    assert args.out_dir == "outdir" and args.parallel == 2
    assert args.targets == ["conformance/test_kernel_write_kv.py", "-k", "huge"]
    assert mc.parse_args([]).targets == ["conformance"]
    try:
        mc.parse_args(["--parallel", "0"])
    except SystemExit as e:
        assert e.code == 2 and "must be positive" in capsys.readouterr().err
    else:
        raise AssertionError("--parallel 0 was accepted")


def _stand_in_sanitizer(tmp_path: Path) -> Path:
    """A `compute-sanitizer` that drops memcheck's options (up to the python
    executable), runs the rest and prints a clean closing line."""
    fake = tmp_path / "bin" / "compute-sanitizer"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nwhile [ "$1" != "' + sys.executable + '" ]; do shift; done\n'
                    '"$@"; rc=$?\necho "========= ERROR SUMMARY: 0 errors"\nexit $rc\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake


def test_run_chunk_through_a_stand_in_sanitizer(tmp_path) -> None:
    fake = _stand_in_sanitizer(tmp_path)
    args = mc.parse_args([str(tmp_path)])
    args.python = sys.executable
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "HYPOTHESIS_PROFILE": "ci"}
    ids = ["conformance/test_bench_gate.py::test_both_conditions_needed",
           "conformance/test_bench_gate.py::test_noise_not_flagged"]
    r = mc.run_chunk(0, ids, args, tmp_path, time.monotonic() + 120, env)
    assert r is not None and r.exit_code == 0 and r.sanitizer_errors == 0, r.report[-2000:]
    suite = mc.merge_junit([r.junit]).find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "0"
    assert mc.verdict([r], mc.merge_junit([r.junit]), planned=1)[0]
    assert mc.run_chunk(1, ids, args, tmp_path, time.monotonic() + 5, env) is None    # too little time left


def test_collect_finds_the_kernel_subset() -> None:
    ids = mc.collect(sys.executable, ["conformance/test_kernel_conversions.py", "conformance/test_bench_gate.py"])
    assert ids and all(i.startswith("conformance/test_kernel_conversions.py::") for i in ids)   # not marked: left out


def test_whole_run_through_a_stand_in_sanitizer(tmp_path, monkeypatch, capsys) -> None:
    """main() end to end on two CPU test files: collection, chunks, merge, files, verdict."""
    fake = _stand_in_sanitizer(tmp_path)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    monkeypatch.setattr(mc, "cuda_available", lambda python: True)
    monkeypatch.setattr(mc, "MARKERS", "not gpu")            # CPU-runnable tests stand in for the GPU subset
    out = tmp_path / "out"
    code = mc.main([str(out), "--tests-per-process", "3", "--parallel", "2", "--cap-s", "300", "--",
                    "conformance/test_bench_gate.py", "conformance/test_bench_sweep.py"])
    text = (out / "memcheck_conformance.txt").read_text()
    assert code == 0, text[-3000:]
    suite = ET.parse(out / "memcheck_conformance.xml").getroot().find("testsuite")
    n = int(suite.get("tests"))
    assert n >= 10 and suite.get("failures") == "0"
    assert text.splitlines()[0].startswith("memcheck over the GPU conformance: CLEAN (0 errors in")
    assert f"{n} of {n} tests passed" in text.splitlines()[0]
    per_file = Counter(case.get("classname") for case in suite.iter("testcase"))
    assert len(per_file) == 2 and text.count("===== chunk ") == sum(-(-k // 3) for k in per_file.values())
    assert (out / "memcheck_memory.txt").exists()
