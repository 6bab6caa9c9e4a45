"""`pagedlm bench run`: the suite registry, recorded skips, and one tiny real run whose
JSON carries raw samples, the machine and a workload fingerprint per benchmark."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.fingerprint import fingerprint, token_digest
from bench.harness import commands, suites
from engine.entrypoints.cli import main as pagedlm

REPO = Path(__file__).resolve().parent.parent


def test_registry_names_every_suite_and_refuses_others() -> None:
    assert [s.name for s in suites.get("all")] == ["scheduler", "prefix", "kernels", "engine"]
    assert [s.name for s in suites.get("kernels")] == ["kernels"] and suites.get("kernels")[0].needs_cuda
    with pytest.raises(ValueError, match="'bogus' is not one of"):
        suites.get("bogus")


def test_skip_reasons(tmp_path) -> None:
    kernels = suites.get("kernels")[0]
    assert "needs a CUDA device" in suites.skip_reason(kernels, REPO, cuda=False)
    assert suites.skip_reason(kernels, REPO, cuda=True) is None
    assert "no benchmark files" in suites.skip_reason(kernels, tmp_path, cuda=True)  # a tree without them
    engine = suites.get("engine")[0]
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "bench_engine_offline.py").write_text("")
    assert engine.paths(tmp_path) == [Path("bench/bench_engine_offline.py")]   # the glob finds new files


def test_fingerprint_is_json_and_digest_is_order_sensitive() -> None:
    assert fingerprint(shape=(32, 8, 128), seed=3) == {"shape": [32, 8, 128], "seed": 3}
    with pytest.raises(ValueError, match="x=nan"):
        fingerprint(x=math.nan)
    with pytest.raises(ValueError, match="not a JSON value"):
        fingerprint(x=object())
    assert token_digest([[1, 2], [3]]) == token_digest([[1, 2], [3]])
    assert len({token_digest([[1, 2], [3]]), token_digest([[1], [2, 3]]), token_digest([[3], [1, 2]])}) == 3


def test_skipped_suites_are_recorded_with_their_reason(tmp_path, monkeypatch, capsys) -> None:
    tree = tmp_path / "tree"   # a checkout with kernel benchmarks and no engine ones
    (tree / "bench").mkdir(parents=True)
    for name in ("conftest.py", "bench_kernels_decode.py"):
        (tree / "bench" / name).write_text("")
    monkeypatch.setattr(commands, "source_tree", lambda: tree)
    monkeypatch.setattr(commands, "probe_cuda", lambda: False)
    assert pagedlm(["bench", "run", "--suite", "kernels", "--out", str(tmp_path)]) == 0
    assert pagedlm(["bench", "run", "--suite", "engine", "--out", str(tmp_path / "e")]) == 0
    err = capsys.readouterr().err
    assert "suite 'kernels' skipped: needs a CUDA device" in err and "suite 'engine' skipped" in err
    kernels = json.loads((tmp_path / "manifest.json").read_text())["suites"]["kernels"]
    assert kernels["status"] == "skipped" and "CUDA" in kernels["reason"]
    assert not list(tmp_path.glob("kernels/*.json"))


def test_one_tiny_real_run(tmp_path, capsys) -> None:
    """The prefix suite, quick, one round: raw samples, machine, fingerprint; then A/A against itself."""
    out = tmp_path / "run"
    assert pagedlm(["bench", "run", "--suite", "prefix", "--rounds", "1", "--quick", "--out", str(out)]) == 0
    assert "[bench run] round 1/1 prefix: 1 benchmark(s)" in capsys.readouterr().err  # progress, one line per round
    doc = json.loads((out / "prefix" / "round0.json").read_text())
    machine = doc["machine_info"]
    assert machine["cpu_cores"] >= 1 and machine["cpu_model"] and "gpu" in machine and machine["torch"]
    spec = machine["gpu_spec"]                                     # the driver's figures, or why not
    assert spec.get("theoretical_bandwidth_gbps", 0) > 0 or spec["absent"]
    [bench] = doc["benchmarks"]
    assert len(bench["stats"]["data"]) == 100                      # raw samples, BENCH_QUICK's rounds
    assert bench["extra_info"]["fingerprint"] == {"prompt_tokens": 2048, "block_size": 16, "rounds": 100,
                                                  "warmup": 20, "seed": 0, "cached_tokens": 2032}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["suites"]["prefix"] == {**manifest["suites"]["prefix"], "status": "ran",
                                            "results": ["prefix/round0.json"]}
    assert pagedlm(["bench", "compare", str(out), str(out)]) == 0   # manifest.json is not read as a result


def test_missing_feature_is_a_recorded_skip() -> None:
    """bench/ours.py refuses to time a launcher without its sync-free path, and the bench
    conftest turns that into a skip naming it (not a silently different measurement)."""
    import bench.conftest as bench_conftest
    from bench.ours import MissingFeature, require

    def launcher(x, check_indices=True):
        return x
    require(launcher, "check_indices")
    with pytest.raises(MissingFeature, match="takes no max_context_len"):
        require(launcher, "check_indices", "max_context_len")
    hook = bench_conftest.pytest_pyfunc_call(None)
    next(hook)
    with pytest.raises(pytest.skip.Exception, match="missing feature: .*takes no plan"):
        hook.throw(MissingFeature("kernels.paged_prefill takes no plan"))
    other = bench_conftest.pytest_pyfunc_call(None)
    next(other)
    with pytest.raises(KeyError):   # anything else stays an error
        other.throw(KeyError("x"))


def test_bad_run_arguments(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        pagedlm(["bench", "run", "--rounds", "0"])
    assert exc.value.code == 2 and "expected a number >= 1" in capsys.readouterr().err
