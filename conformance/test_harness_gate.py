"""`pagedlm bench gate` on a tiny git repository, with a stand-in for the pytest run
(the statistics have their own tests): rounds interleave base/head/head/base, a
planted slowdown in head fails, the worktrees go away on every way out (Ctrl-C
included), a base without the suite is skipped, an unknown revision exits 2."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.harness import cli_args, gate, runner, synthetic

NAMES = {"bench/bench_scheduler.py::test_schedule_update_round[256]": 6e-4,
         "bench/bench_scheduler.py::test_schedule_update_round[1024]": 6e-3}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _repo(tmp_path: Path) -> Path:
    """Three commits: without the suite, with it, with it again (the head)."""
    repo = tmp_path / "repo"
    (repo / "engine").mkdir(parents=True)
    (repo / "bench").mkdir()
    (repo / "engine" / "__init__.py").write_text("")
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "no suite")
    for msg in ("suite", "head"):
        (repo / "bench" / "bench_scheduler.py").write_text(f"# {msg}\n")
        _git(repo, "add", ".")
        _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", msg)
    return repo


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    cli_args.add_gate(p)
    return p.parse_args(list(argv))


class FakeRun:
    """Writes a synthetic round for whichever tree it is asked to run; head may be slower."""

    def __init__(self, repo: Path, head_slowdown: float = 0.0, interrupt_at: int | None = None) -> None:
        self.repo, self.slowdown, self.interrupt_at = repo, head_slowdown, interrupt_at
        self.calls: list[str] = []
        self.trees: set[Path] = set()
        self.gen = np.random.default_rng(0)

    def __call__(self, suite, tree: Path, json_path: Path, progress=None, **kw) -> Path:
        side = "head" if tree == self.repo else "base"
        assert tree.is_dir() and (tree / "bench" / "bench_scheduler.py").is_file()
        self.calls.append(side)
        self.trees.add(tree)
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        slow = {n: self.slowdown for n in NAMES} if side == "head" else {}
        [doc] = synthetic.suite(self.gen, NAMES, 1, 60, noise=0.02, slowdown=slow)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc))
        return json_path


def _no_worktrees_left(repo: Path, fake: FakeRun) -> bool:
    listed = [line for line in _git(repo, "worktree", "list").splitlines() if line.strip()]
    return len(listed) == 1 and all(t == fake.repo or not t.exists() for t in fake.trees)


def test_order_interleaves() -> None:
    assert [gate.order(r) for r in range(4)] == [("base", "head"), ("head", "base")] * 2


def test_gate_passes_a_same_speed_head_and_cleans_up(tmp_path, monkeypatch, capsys) -> None:
    repo = _repo(tmp_path)
    fake = FakeRun(repo)
    monkeypatch.setattr(runner, "run_round", fake)
    assert gate.gate(_args("--base", "HEAD~1", "--rounds", "3"), repo) == 0
    assert fake.calls == ["base", "head", "head", "base", "base", "head"]
    assert _no_worktrees_left(repo, fake) and len(fake.trees) == 2
    assert capsys.readouterr().out.startswith("**PASS**")


def test_gate_fails_a_slower_head(tmp_path, monkeypatch, capsys) -> None:
    repo = _repo(tmp_path)
    fake = FakeRun(repo, head_slowdown=0.2)
    monkeypatch.setattr(runner, "run_round", fake)
    keep = tmp_path / "keep"
    assert gate.gate(_args("--base", "HEAD~1", "--rounds", "5", "--keep", str(keep)), repo) == 1
    assert capsys.readouterr().out.startswith("**FAIL**: 2 regression(s)")
    assert sorted(p.name for p in (keep / "base").glob("*.json")) == [f"round{i}.json" for i in range(5)]
    assert _no_worktrees_left(repo, fake)


def test_ctrl_c_removes_the_worktrees(tmp_path, monkeypatch, capsys) -> None:
    repo = _repo(tmp_path)
    fake = FakeRun(repo, interrupt_at=3)
    monkeypatch.setattr(runner, "run_round", fake)
    assert gate.gate(_args("--base", "HEAD~1", "--rounds", "3"), repo) == 130
    assert "interrupted; worktrees removed" in capsys.readouterr().err
    assert _no_worktrees_left(repo, fake)


def test_base_without_the_suite_is_skipped(tmp_path, monkeypatch, capsys) -> None:
    repo = _repo(tmp_path)
    fake = FakeRun(repo)
    monkeypatch.setattr(runner, "run_round", fake)
    assert gate.gate(_args("--base", "HEAD~2"), repo) == 0
    assert "skipped: base HEAD~2" in capsys.readouterr().err and not fake.calls
    assert _no_worktrees_left(repo, fake)


def test_unknown_revision_and_all_suites_exit_2(tmp_path, capsys) -> None:
    repo = _repo(tmp_path)
    assert gate.gate(_args("--base", "no-such-rev"), repo) == 2
    assert "'no-such-rev' is not a commit" in capsys.readouterr().err
    assert gate.gate(_args("--base", "HEAD~1", "--suite", "all"), repo) == 2


def test_a_tree_importing_another_checkout_is_refused(tmp_path) -> None:
    (tmp_path / "bench").mkdir()   # no engine/ here: it would come from the installed checkout
    with pytest.raises(ValueError, match="do not import from the tree itself"):
        gate.check_importable(tmp_path, sys.executable)
