"""LLM: the offline API, as vLLM's — `LLM(model=...).generate(prompts, params)`."""
from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any, Optional, Union

from tqdm.auto import tqdm

from engine.engine_args import EngineArgs
from engine.llm_engine import LLMEngine, Prompt
from engine.outputs import RequestOutput
from engine.sampling.sampling_params import SamplingParams

Prompts = Union[Prompt, Sequence[Prompt]]


class LLM:
    """An engine plus a request loop. Engine arguments use vLLM's names
    (engine/engine_args.py); an unknown name is a ValueError."""

    def __init__(self, model: str = "smollm2-135m", **kwargs: Any) -> None:
        self.llm_engine = LLMEngine.from_engine_args(EngineArgs.from_kwargs(model=model, **kwargs))
        self._ids = itertools.count()

    def get_tokenizer(self) -> Any:
        return self.llm_engine.tokenizer

    def generate(self, prompts: Prompts,
                 sampling_params: Union[SamplingParams, Sequence[SamplingParams], None] = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """Run every prompt to completion; outputs in input order. `prompts`: a
        string, a {"prompt_token_ids": [...]} dict, or a list of them;
        `sampling_params`: one for all, or one per prompt."""
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        prompts = list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            params = [sampling_params] * len(prompts)
        else:
            params = list(sampling_params)
            if len(params) != len(prompts):
                raise ValueError(f"got {len(params)} sampling_params for {len(prompts)} prompts")
        engine = self.llm_engine
        order: dict[str, int] = {}
        added: list[str] = []
        try:
            for i, (prompt, p) in enumerate(zip(prompts, params)):
                rid = str(next(self._ids))
                engine.add_request(rid, prompt, p)
                order[rid] = i
                added.append(rid)
        except ValueError:
            engine.abort_request(added)     # a bad prompt leaves nothing behind
            raise
        return self._run(order, use_tqdm)

    def chat(self, messages: Union[list[dict], list[list[dict]]],
             sampling_params: Union[SamplingParams, Sequence[SamplingParams], None] = None,
             use_tqdm: bool = True, add_generation_prompt: bool = True) -> list[RequestOutput]:
        """Generate replies to conversations through the tokenizer's chat template."""
        tokenizer = self.get_tokenizer()
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat() needs a tokenizer with a chat template")
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        prompts = [{"prompt_token_ids": list(tokenizer.apply_chat_template(
            conv, add_generation_prompt=add_generation_prompt, tokenize=True,
            return_dict=False))} for conv in conversations]
        return self.generate(prompts, sampling_params, use_tqdm)

    def _run(self, order: dict[str, int], use_tqdm: bool) -> list[RequestOutput]:
        engine = self.llm_engine
        results: list[Optional[RequestOutput]] = [None] * len(order)
        bar = tqdm(total=len(order), desc="Processed prompts", disable=not use_tqdm,
                   dynamic_ncols=True)
        start, generated = time.perf_counter(), 0
        with bar:
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished and out.request_id in order:
                        results[order[out.request_id]] = out
                        generated += sum(len(c.token_ids) for c in out.outputs)
                        bar.update(1)
                        rate = generated / max(time.perf_counter() - start, 1e-9)
                        bar.set_postfix_str(f"{rate:.1f} tok/s")
        missing = [rid for rid, i in order.items() if results[i] is None]
        if missing:
            raise RuntimeError(f"requests {missing} did not finish")
        return results  # type: ignore[return-value]
