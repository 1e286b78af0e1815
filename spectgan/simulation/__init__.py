"""Simulated acquisition of the "real" cohort: the perfusion phantom and the SPECT acquisition model."""
