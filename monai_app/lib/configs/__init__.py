"""The TaskConfig of a served model bundle (one class for every bundle: ``main.SpectganApp`` makes one per model)."""
