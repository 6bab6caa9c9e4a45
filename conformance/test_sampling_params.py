"""SamplingParams: vLLM's names and defaults, normalisation, and a ValueError that
names the field and the value for every invalid input. Plain data: no torch."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.sampling.sampling_params import SamplingParams, SamplingType

# vLLM's defaults, written out here (not read from the class under test).
VLLM_DEFAULTS = {
    "n": 1, "best_of": None, "presence_penalty": 0.0, "frequency_penalty": 0.0,
    "repetition_penalty": 1.0, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0,
    "seed": None, "stop": [], "stop_token_ids": [], "include_stop_str_in_output": False,
    "ignore_eos": False, "max_tokens": 16, "min_tokens": 0, "logprobs": None,
    "prompt_logprobs": None, "skip_special_tokens": True,
}


def test_defaults_are_vllms() -> None:
    params = SamplingParams()
    assert {f.name: getattr(params, f.name) for f in dataclasses.fields(params)} == VLLM_DEFAULTS
    assert params.sampling_type is SamplingType.RANDOM and not params.is_greedy


def test_imports_without_torch() -> None:
    code = ("import sys, engine.sampling.sampling_params, engine.sampling; "
            "from engine.sampling import SamplingParams; SamplingParams(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_normalisation() -> None:
    assert SamplingParams(top_k=-1).top_k == 0
    assert SamplingParams(stop="###").stop == ["###"]
    assert SamplingParams(stop=("a", "b")).stop == ["a", "b"]
    assert SamplingParams(stop_token_ids=(5, 7)).stop_token_ids == [5, 7]
    p = SamplingParams(temperature=1, top_p=1, repetition_penalty=2)
    assert all(isinstance(v, float) for v in (p.temperature, p.top_p, p.repetition_penalty))
    assert SamplingParams(n=3, best_of=3).best_of == 3


def test_sampling_type() -> None:
    assert SamplingParams(temperature=0).sampling_type is SamplingType.GREEDY
    assert SamplingParams(temperature=0, seed=1).is_greedy
    assert SamplingParams(temperature=1e-6).is_greedy        # below vLLM's epsilon
    assert SamplingParams(temperature=0.5, seed=3).sampling_type is SamplingType.RANDOM_SEED
    assert SamplingParams(temperature=0.5).sampling_type is SamplingType.RANDOM


def test_output_text_buffer_length() -> None:
    assert SamplingParams().output_text_buffer_length == 0
    assert SamplingParams(stop=["ab", "wxyz"]).output_text_buffer_length == 3
    kept = SamplingParams(stop=["wxyz"], include_stop_str_in_output=True)
    assert kept.output_text_buffer_length == 0


def test_replace_revalidates_and_clone_is_independent() -> None:
    p = SamplingParams(stop="x", top_k=-1, max_tokens=4)
    q = dataclasses.replace(p, temperature=0.0)
    assert q.stop == ["x"] and q.top_k == 0 and q.is_greedy and not p.is_greedy
    c = p.clone()
    c.stop.append("y")
    assert p.stop == ["x"] and c == dataclasses.replace(p, stop=["x", "y"])
    with pytest.raises(ValueError, match="max_tokens"):
        dataclasses.replace(p, max_tokens=0)


BAD = [
    ("n", 0), ("n", 1.0), ("n", True),
    ("best_of", 0), ("best_of", 2),                      # with n=1: 0 < n; 2 != n unsupported
    ("temperature", -0.1), ("temperature", float("nan")), ("temperature", float("inf")),
    ("temperature", "1"), ("temperature", True),
    ("top_p", 0.0), ("top_p", 1.5), ("top_p", -0.2),
    ("top_k", -2), ("top_k", 1.5), ("top_k", False),
    ("min_p", -0.1), ("min_p", 1.01),
    ("presence_penalty", 2.5), ("presence_penalty", -2.01),
    ("frequency_penalty", -3.0), ("frequency_penalty", 2.1),
    ("repetition_penalty", 0.0), ("repetition_penalty", -1.0), ("repetition_penalty", float("inf")),
    ("seed", 1.5), ("seed", 1 << 64), ("seed", True),
    ("stop", [""]), ("stop", ["ok", 3]), ("stop", 7),
    ("stop_token_ids", [-1]), ("stop_token_ids", [1.0]), ("stop_token_ids", "12"),
    ("max_tokens", 0), ("max_tokens", -5), ("max_tokens", 2.0),
    ("min_tokens", -1), ("min_tokens", 17),             # 17 > max_tokens=16
    ("logprobs", -1), ("logprobs", 1.0), ("prompt_logprobs", -2),
    ("include_stop_str_in_output", 1), ("ignore_eos", "yes"), ("skip_special_tokens", None),
]


@pytest.mark.parametrize(("field", "value"), BAD, ids=[f"{f}={v!r}" for f, v in BAD])
def test_invalid_field_names_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ValueError) as err:
        SamplingParams(**{field: value})
    assert field in str(err.value) and repr(value) in str(err.value)


def test_best_of_message_says_only_equal_is_supported() -> None:
    with pytest.raises(ValueError, match="only best_of == n"):
        SamplingParams(n=2, best_of=3)
    with pytest.raises(ValueError, match="best_of"):
        SamplingParams(n=3, best_of=2)


def test_accepts_boundaries() -> None:
    SamplingParams(temperature=0.0, top_p=1.0, top_k=1, min_p=1.0, presence_penalty=-2.0,
                   frequency_penalty=2.0, repetition_penalty=1e-3, max_tokens=1, min_tokens=1,
                   logprobs=0, prompt_logprobs=0, seed=-(1 << 63))
    p = SamplingParams(max_tokens=None, min_tokens=100, seed=(1 << 64) - 1)
    assert p.max_tokens is None


valid_params = st.builds(
    SamplingParams,
    n=st.integers(1, 4),
    temperature=st.floats(0.0, 5.0),
    top_p=st.floats(0.0, 1.0, exclude_min=True),
    top_k=st.integers(-1, 50),
    min_p=st.floats(0.0, 1.0),
    presence_penalty=st.floats(-2.0, 2.0),
    frequency_penalty=st.floats(-2.0, 2.0),
    repetition_penalty=st.floats(0.01, 10.0),
    seed=st.none() | st.integers(0, 2**32),
    stop=st.none() | st.text(min_size=1, max_size=4) | st.lists(st.text(min_size=1, max_size=4)),
    stop_token_ids=st.none() | st.lists(st.integers(0, 100)),
    max_tokens=st.integers(16, 64),
    min_tokens=st.integers(0, 16),
    logprobs=st.none() | st.integers(0, 20),
)


@given(valid_params)
def test_replace_is_a_fixed_point(params: SamplingParams) -> None:
    """Normalised values survive a second __post_init__ unchanged."""
    assert dataclasses.replace(params) == params
    assert params.top_k >= 0 and isinstance(params.stop, list)
    assert params.is_greedy == (params.temperature < 1e-5)
