"""spectgan: synthetic brain perfusion SPECT (123I-IMP) from a conditional FastGAN."""

__version__ = "0.1.0"
