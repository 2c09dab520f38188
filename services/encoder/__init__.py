"""Encoder service: images and texts to CLIP embeddings (Triton, or ONNX Runtime in-process)."""
