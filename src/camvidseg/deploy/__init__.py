"""Deployment: ONNX export, predict, model card; torch-free runtime and cost."""
