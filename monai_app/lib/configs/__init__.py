"""One small TaskConfig per served model bundle; ``main.SpectganApp`` finds them by their ``model_name``."""
