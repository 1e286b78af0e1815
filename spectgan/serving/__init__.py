"""Serving: what the MONAI Label app (monai_app) calls to generate and retrain."""
