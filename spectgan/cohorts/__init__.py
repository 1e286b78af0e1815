"""Cohorts: simulated ones (``simulated``), imported real studies (``importer``) and their one on-disk format."""
