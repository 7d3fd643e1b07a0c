"""PandA: non-negative parts and appearances of a pretrained GAN's feature maps."""

__version__ = "0.1.0"
