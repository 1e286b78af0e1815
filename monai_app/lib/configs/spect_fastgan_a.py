from lib.configs.spectgan_model import SpectganModelConfig


class SpectFastganA(SpectganModelConfig):
    """Model A: trained on all three levels (CER, BG, COR)."""

    model_name = "spect_fastgan_A"
