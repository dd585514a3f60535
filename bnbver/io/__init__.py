"""Loaders: ONNX, ACAS Xu .nnet, torch modules, VNN-LIB properties."""
