from lib.configs.spectgan_model import SpectganModelConfig


class SpectFastganB(SpectganModelConfig):
    """Model B: trained on the COR level only."""

    model_name = "spect_fastgan_B"
