"""The `triton` attention backend: our paged kernels (kernels/README.md).

Per layer: `write_kv` puts the step's new K/V rows into their slots, then a
decode-only step runs `paged_decode` (one query row per sequence) and any step
with prompt chunks runs `paged_prefill` over the whole flat batch (its decodes
are query_len-1 rows there). Every call is unchecked (`check_indices=False`,
`max_context_len=`): the metadata was validated once when the step was built
(engine/attention/metadata.py), and a checked call syncs with the host.

The prefill kernel's tile map depends only on the step's metadata (and the
head_dim and dtype, which every layer shares), so the backend builds it once,
for the first layer, and reuses it while the same metadata object comes back.
It is built from the metadata's host ints and device tensors without reading
the device: the checks `kernels.prefill_plan.plan_prefill` would run (with
syncs) are the ones `build_metadata` already made.
"""
from __future__ import annotations

import torch

import kernels
from engine.attention.backend import AttentionBackend
from engine.attention.metadata import AttentionMetadata
from kernels.decode_workspace import DecodeWorkspace
from kernels.prefill_config import prefill_config
from kernels.prefill_plan import PrefillPlan
from kernels.tile_map import build_tile_map
from kernels.triton_compat import is_interpreting


class TritonBackend(AttentionBackend):
    name = "triton"

    def __init__(self) -> None:
        # The step whose plans are cached: held (not its id) so that a new step's
        # metadata can never be mistaken for it, even at a recycled address.
        self._plan_step: AttentionMetadata | None = None
        self._plans: dict[tuple[int, torch.dtype, torch.device], PrefillPlan] = {}
        # Split-K partials reused by every layer and step (all on one stream).
        self._decode_workspace = DecodeWorkspace()

    def prefill_plan(self, metadata: AttentionMetadata, head_dim: int, query_dtype: torch.dtype,
                     device: torch.device) -> PrefillPlan:
        """The prefill plan of this step (built on first use, no host sync)."""
        if self._plan_step is not metadata:
            self._plan_step, self._plans = metadata, {}
        key = (head_dim, query_dtype, device)
        plan = self._plans.get(key)
        if plan is None:
            on_gpu = device.type == "cuda" and not is_interpreting()
            config = prefill_config(head_dim, query_dtype, on_gpu, metadata.max_query_len,
                                    metadata.max_context_len)
            tile_map = build_tile_map(metadata.query_start_loc, metadata.context_lens,
                                      metadata.num_tokens, config.block_m)
            plan = PrefillPlan(tile_map, config, metadata.num_seqs, metadata.num_tokens, metadata.max_query_len)
            self._plans[key] = plan
        return plan

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                kv_cache: torch.Tensor, kv_scales: torch.Tensor | None,
                metadata: AttentionMetadata, scale: float) -> torch.Tensor:
        kernels.write_kv(key, value, kv_cache, metadata.slot_mapping, kv_scales, check_indices=False)
        if metadata.is_decode_only:
            return kernels.paged_decode(query, kv_cache, metadata.block_tables, metadata.context_lens, scale,
                                        kv_scales, max_context_len=metadata.max_context_len,
                                        check_indices=False, workspace=self._decode_workspace)
        plan = self.prefill_plan(metadata, query.shape[-1], query.dtype, query.device)
        return kernels.paged_prefill(query, kv_cache, metadata.block_tables, metadata.query_start_loc,
                                     metadata.context_lens, scale, kv_scales, plan=plan)
