"""Task configs, infer tasks and train tasks of the spectgan MONAI Label app (thin: ``spectgan.serving.service`` works)."""
