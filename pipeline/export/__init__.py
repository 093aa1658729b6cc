"""Framework-free deployment export: a trained policy as ONNX and torch.export graphs that take raw observations,
with its normalizer, config, lineage and model card (`package.export_deployment`)."""
