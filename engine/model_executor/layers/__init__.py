"""Small building blocks of the models: norms, rotary embedding, fused linears, activations."""
from engine.model_executor.layers.activation import ReLU, SiluAndMul
from engine.model_executor.layers.linear import Linear, PackedGemm, ShardedLinear, pack_gemms
from engine.model_executor.layers.norm import LayerNorm, RMSNorm
from engine.model_executor.layers.rotary import RotaryEmbedding, apply_rotary, rotary_from_config

__all__ = ["LayerNorm", "Linear", "PackedGemm", "RMSNorm", "ReLU", "RotaryEmbedding", "ShardedLinear", "SiluAndMul",
           "pack_gemms",
           "apply_rotary", "rotary_from_config"]
