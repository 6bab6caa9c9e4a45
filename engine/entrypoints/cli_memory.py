"""`pagedlm memory`: how many KV-cache blocks and tokens fit on a device.

A front end to the engine's own memory math (`engine.core.kv_memory`, the one the
model runner sizes its cache with) and `engine.core.model_shapes`. No torch.
"""
from __future__ import annotations

import argparse
import json
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Mapping

from engine.core import kv_memory as kvm
from engine.core.model_shapes import PRESET_NAMES, ModelShape, resolve_model
from engine.entrypoints.sizes import format_size, parse_size

# Read-only, as the other module-level tables.
_DTYPE_ALIASES: Mapping[str, str] = MappingProxyType({
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "fp8": "fp8", "fp8_e4m3": "fp8", "float8_e4m3fn": "fp8", "e4m3": "fp8",
    "int8": "int8",
})

EPILOG = f"""\
examples:
  # OPT-13B on a 40 GB card, the textbook sizing example
  pagedlm memory --layers 40 --kv-heads 40 --head-dim 128 --dtype float16 --block-size 16 \\
                 --gpu-memory 40GiB --weights 26GiB --activations 3GiB --overhead 1GiB
  # a preset (weights estimated from its parameter count), 90% of an 80 GiB card, int8 KV
  pagedlm memory --model smollm2-135m --gpu-memory 80GiB --utilization 0.9 --tokens 100 --kv-dtype int8
  # any local Hugging Face model directory (reads its config.json); machine-readable output
  pagedlm memory --model ./my-llama --gpu-memory 24GiB --weights 15GiB --json

formulas:
  bytes/token = 2 (K and V) x layers x kv_heads x (head_dim x dtype_bytes + scale_bytes)
                scale_bytes = 4 for int8/fp8 caches (a float32 scale per token and KV head), else 0
  bytes/block = bytes/token x block_size
  KV budget   = gpu_memory x utilization - weights - activations - overhead
  blocks      = floor(budget / bytes/block);  token capacity = blocks x block_size
  blocks for N tokens = ceil(N / block_size); waste = empty slots of the last block

  The usual rough answer (about 800 blocks / 12,800 tokens) rounds an OPT-13B block to
  12.8 MB; the exact block is 2x40x40x128x2x16 = 13,107,200 B (12.5 MiB), so its 10 GiB
  budget holds 819 blocks = 13,104 tokens, which is what this command prints.

sizes: plain bytes or a number with B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB
(powers of 1024), case-insensitive, decimals allowed (12.5GiB).
presets: {", ".join(PRESET_NAMES)}
"""


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _dtype_arg(text: str) -> str:
    dtype = _DTYPE_ALIASES.get(text.lower())
    if dtype is None:
        raise argparse.ArgumentTypeError(
            f"unknown dtype {text!r} (choose from {', '.join(kvm.ELEMENT_BYTES)})")
    return dtype


def _positive_int_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _utilization_arg(text: str) -> Fraction:
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def register(subparsers: Any) -> None:
    """Add the `memory` subcommand to the `pagedlm` parser."""
    p = subparsers.add_parser(
        "memory", help="KV-cache memory calculator: blocks and tokens that fit",
        description="How many KV-cache blocks and tokens fit in GPU memory, from a model "
                    "shape (a preset, a local HF directory, or explicit sizes).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    shape = p.add_argument_group("model shape (--model, or all three of --layers/--kv-heads/--head-dim)")
    shape.add_argument("--model", metavar="NAME|DIR",
                       help=f"preset ({', '.join(PRESET_NAMES)}) or a directory with config.json")
    shape.add_argument("--layers", type=_positive_int_arg, help="decoder layers")
    shape.add_argument("--kv-heads", type=_positive_int_arg,
                       help="KV heads per layer (with GQA, fewer than the query heads)")
    shape.add_argument("--head-dim", type=_positive_int_arg, help="dimension of one head")
    dt = p.add_argument_group("dtypes: " + ", ".join(kvm.ELEMENT_BYTES))
    dt.add_argument("--dtype", type=_dtype_arg,
                    help="model dtype (default: the model's config dtype, else float16)")
    dt.add_argument("--kv-dtype", type=_dtype_arg, help="KV cache dtype (default: --dtype)")
    cache = p.add_argument_group("cache")
    cache.add_argument("--block-size", type=_positive_int_arg, default=16,
                       help="tokens per block (default: 16)")
    cache.add_argument("--tokens", type=_positive_int_arg,
                       help="also report blocks and last-block waste for a sequence this long")
    m = p.add_argument_group("memory (sizes like 40GiB, 512MiB, 12.5GB, or bytes)")
    m.add_argument("--gpu-memory", type=_size_arg, required=True, help="device memory")
    m.add_argument("--utilization", type=_utilization_arg, default=Fraction(1),
                   help="share of --gpu-memory the engine may use, in (0, 1] (default: 1.0)")
    m.add_argument("--weights", type=_size_arg,
                   help="model weights (default with --model: estimated from its parameters)")
    m.add_argument("--activations", type=_size_arg, default=0, help="activation peak (default: 0)")
    m.add_argument("--overhead", type=_size_arg, default=0,
                   help="CUDA context, allocator slack, etc. (default: 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(handler=lambda args: run(args, p))


def _shape(args: argparse.Namespace) -> ModelShape | None:
    explicit = {"--layers": args.layers, "--kv-heads": args.kv_heads, "--head-dim": args.head_dim}
    if args.model is not None:
        given = [flag for flag, v in explicit.items() if v is not None]
        if given:
            raise ValueError(f"--model conflicts with {', '.join(given)}: give a model or its shape")
        return resolve_model(args.model)
    missing = [flag for flag, v in explicit.items() if v is None]
    if missing:
        raise ValueError(f"give --model, or the shape: missing {', '.join(missing)}")
    return None


def compute(args: argparse.Namespace) -> dict[str, Any]:
    """The calculator's answer as a plain dict (the --json output). Raises ValueError."""
    model = _shape(args)
    layers = model.num_layers if model else args.layers
    kv_heads = model.num_kv_heads if model else args.kv_heads
    head_dim = model.head_dim if model else args.head_dim
    dtype = args.dtype or (model.dtype if model else "float16")
    kv_dtype = args.kv_dtype or dtype
    weights, estimated = args.weights, False
    if weights is None:
        if model is None:
            raise ValueError("--weights is required without --model (e.g. --weights 26GiB)")
        weights, estimated = model.weight_bytes(kvm.dtype_bytes(dtype)), True
    kv_bytes, scale = kvm.dtype_bytes(kv_dtype), kvm.scale_bytes(kv_dtype)
    bs = args.block_size
    per_token = kvm.token_bytes(layers, kv_heads, head_dim, kv_bytes, scale)
    per_block = kvm.block_bytes(bs, layers, kv_heads, head_dim, kv_bytes, scale)
    budget = kvm.kv_budget_bytes(args.gpu_memory, args.utilization, weights,
                                 args.activations, args.overhead)
    num_blocks = kvm.num_blocks_for_budget(budget, bs, layers, kv_heads, head_dim,
                                           kv_bytes, scale)
    out: dict[str, Any] = {
        "model": model.name if model else None, "layers": layers, "kv_heads": kv_heads,
        "head_dim": head_dim, "dtype": dtype, "kv_dtype": kv_dtype,
        "kv_dtype_bytes": kv_bytes, "scale_bytes_per_head": scale,
        "block_size": bs, "bytes_per_token": per_token, "bytes_per_block": per_block,
        "gpu_memory": args.gpu_memory, "utilization": float(args.utilization),
        "usable_memory": kvm.usable_bytes(args.gpu_memory, args.utilization),
        "weights": weights, "weights_estimated": estimated,
        "num_params": model.num_params if model else None,
        "activations": args.activations, "overhead": args.overhead, "kv_budget": budget,
        "num_blocks": num_blocks, "token_capacity": kvm.token_capacity(num_blocks, bs),
    }
    if args.tokens is not None:
        needed = kvm.blocks_for_tokens(args.tokens, bs)
        waste = kvm.last_block_waste(args.tokens, bs)
        out.update(tokens=args.tokens, blocks_needed=needed, wasted_slots=waste,
                   waste_fraction=waste / (needed * bs), sequences_that_fit=num_blocks // needed)
    return out


def _bytes(n: int) -> str:
    return f"{n:,} B" if n < 1024 else f"{n:,} B ({format_size(n)})"


def render_table(r: dict[str, Any]) -> str:
    """The answer as an aligned two-column table for people."""
    shape = f"{r['layers']} layers x {r['kv_heads']} KV heads x head_dim {r['head_dim']}"
    kv = f"{r['kv_dtype']} ({r['kv_dtype_bytes']} B"
    kv += f" + float32 scale per token and KV head)" if r["scale_bytes_per_head"] else ")"
    weights = _bytes(r["weights"])
    if r["weights_estimated"]:
        weights += (f"  ESTIMATE: {r['num_params']:,} params x {r['dtype']};"
                    " pass --weights for the real size")
    rows = [("model", r["model"] or "(explicit shape)"), ("shape", shape), ("KV cache dtype", kv),
            ("bytes per token", _bytes(r["bytes_per_token"])),
            ("block size", f"{r['block_size']} tokens"),
            ("bytes per block", _bytes(r["bytes_per_block"])),
            ("GPU memory", _bytes(r["gpu_memory"])),
            ("utilization", f"{r['utilization']:g} -> usable {_bytes(r['usable_memory'])}"),
            ("weights", weights), ("activations", _bytes(r["activations"])),
            ("overhead", _bytes(r["overhead"])), ("KV budget", _bytes(r["kv_budget"])),
            ("KV blocks", f"{r['num_blocks']:,}"),
            ("token capacity", f"{r['token_capacity']:,} tokens")]
    if "tokens" in r:
        rows += [(f"{r['tokens']:,}-token sequence",
                  f"{r['blocks_needed']:,} blocks, {r['wasted_slots']} slots wasted in the last "
                  f"({r['waste_fraction']:.2%} of {r['blocks_needed'] * r['block_size']:,} slots)"),
                 ("sequences that fit", f"{r['sequences_that_fit']:,}")]
    if r["num_blocks"] == 0:
        rows.append(("note", "the KV budget is smaller than one block"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Handler of `pagedlm memory`; usage and math errors exit 2 through `parser.error`."""
    try:
        report = compute(args)
    except ValueError as e:
        parser.error(str(e))
    print(json.dumps(report, indent=2) if args.json else render_table(report))
    return 0
