"""Small building blocks of the models: norms, rotary embedding, fused linears, activations."""
from engine.model_executor.layers.activation import ReLU, SiluAndMul
from engine.model_executor.layers.linear import ShardedLinear
from engine.model_executor.layers.norm import LayerNorm, RMSNorm
from engine.model_executor.layers.rotary import RotaryEmbedding, apply_rotary, rotary_from_config

__all__ = ["LayerNorm", "RMSNorm", "ReLU", "RotaryEmbedding", "ShardedLinear", "SiluAndMul",
           "apply_rotary", "rotary_from_config"]
