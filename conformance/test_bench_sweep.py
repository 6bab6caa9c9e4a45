"""The command lines of bench's sweeps and kernel probes, checked without a GPU (the runs need one)."""
from __future__ import annotations

import pytest
import torch

from bench import sweep_decode


def test_knob_lists_and_heads_parse() -> None:
    args = sweep_decode.parse_args(["--splits", "auto,4, 8", "--block-n", "32,64", "--heads", "9/3/64",
                                    "--cache", "fp8", "--batch", "2", "--context", "100"])
    assert args.splits == [None, 4, 8] and args.block_n == [32, 64]
    assert args.warps == [None] and args.stages == [None]
    assert args.heads == (9, 3, 64) and args.cache == "fp8" and (args.batch, args.context) == (2, 100)
    assert args.pdl == [None] and sweep_decode.parse_args(["--pdl", "0, 1,auto"]).pdl == [False, True, None]
    assert args.split_reduce == [None]
    assert sweep_decode.parse_args(["--split-reduce", "kernel, fused,auto"]).split_reduce == ["kernel", "fused", None]


@pytest.mark.parametrize("argv, message", [
    (["--splits", "4,x"], "--splits: 'x' is neither 'auto' nor an integer"),
    (["--warps", "0"], "--warps: 0 must be >= 1"),
    (["--heads", "32x8"], "--heads wants Hq/Hkv/D like 32/8/128, got '32x8'"),
    (["--pdl", "yes"], "--pdl takes auto, 0 and 1, got 'yes'"),
    (["--split-reduce", "tree"], "--split-reduce takes auto, fused, kernel, got 'tree'"),
])
def test_bad_knobs_exit_with_a_message(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        sweep_decode.parse_args(argv)
    assert message in str(exc.value.code) + capsys.readouterr().err


def test_bad_sizes_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        sweep_decode.parse_args(["--batch", "0"])
    assert exc.value.code == 2 and "--batch and --context must be >= 1" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_says_so_and_exits_2(capsys) -> None:
    assert sweep_decode.main([]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err


def test_prefill_sweep_arguments() -> None:
    from bench import sweep_prefill
    args = sweep_prefill.parse_args(["--block-m", "64,auto", "--block-n", "128", "--heads", "32/8/128"])
    assert args.block_m == [64, None] and args.block_n == [128] and args.warps == [None]
    assert args.heads == (32, 8, 128) and (args.batch, args.seq_len) == (4, 4096)
    with pytest.raises(SystemExit):
        sweep_prefill.parse_args(["--seq-len", "0"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_prefill_sweep_without_cuda_exits_2(capsys) -> None:
    from bench import sweep_prefill
    assert sweep_prefill.main([]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
@pytest.mark.parametrize("probe,needs", [("probe_prefill_sm90", "needs an sm_90 CUDA device"),
                                         ("probe_decode_quant_mma", "needs a CUDA device of sm_89 or newer")])
def test_kernel_probes_without_cuda_exit_2(probe: str, needs: str, capsys) -> None:
    """The two kernel probes (run on a card, their records under bench/results/h200/sweeps)
    say what they need and exit 2 instead of failing somewhere inside."""
    import importlib
    module = importlib.import_module(f"bench.{probe}")
    assert module.main(["--no-time"]) == 2
    assert needs in capsys.readouterr().err


def test_probes_time_only_after_every_check_passed(tmp_path) -> None:
    import json

    from bench.probe_run import checks_then_timings
    timed: list[int] = []
    ok = [{"case": "a", "ok": True}]
    bad = ok + [{"case": "b", "ok": False}]
    path = tmp_path / "probe.json"
    assert checks_then_timings("dev", lambda: bad, lambda: timed.append(1) or [], False, str(path)) == 1
    assert timed == [] and json.loads(path.read_text()) == {"device": "dev", "checks": bad}
    assert checks_then_timings("dev", lambda: ok, lambda: timed.append(1) or [{"t": 1.0}], False, str(path)) == 0
    assert timed == [1] and json.loads(path.read_text())["timings"] == [{"t": 1.0}]
    assert checks_then_timings("dev", lambda: ok, lambda: timed.append(1) or [], True, None) == 0 and timed == [1]
