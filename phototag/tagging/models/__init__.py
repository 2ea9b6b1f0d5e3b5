"""Model architectures (timm style): tensors in, logits out. No files, no database."""
