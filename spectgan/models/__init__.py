"""Models: one package per model family (``fastgan``: the conditional FastGAN)."""
