"""Robustness analyses that sample: prior perturbation, exposure bias, weight quantization."""
