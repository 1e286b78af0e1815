from .spectgan_infer import SpectganInfer
