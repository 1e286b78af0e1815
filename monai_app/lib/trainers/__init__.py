from .spectgan_train import SpectganTrain
