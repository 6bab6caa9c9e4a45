"""The model side of a step: models/ (Llama, OPT), layers/ (norms, rotary, fused
linears, activations), weight loading and the model runner (docs/architecture.md)."""
