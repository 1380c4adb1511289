"""cnnpipe: train convolutional image classifiers and ship them as quantized TFLite models.

The library imports nothing heavy at import time: TensorFlow is imported inside the functions that need it.
"""
__version__ = "0.1.0"
