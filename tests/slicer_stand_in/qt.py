"""Stand-in for Slicer's ``qt`` (PythonQt): the SpectGAN module imports it, and only its Widget, which the stand-in
cannot set up (no GUI), uses it."""
