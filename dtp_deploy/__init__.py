"""dtp-deploy: export, plugins, runtime and benchmarks for dynamic-token-pruning ViT segmenters."""

__version__ = "0.1.0"
