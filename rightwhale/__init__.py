"""rightwhale: identify North Atlantic right whales from aerial photos.

A JAX/Flax reimplementation of the 2nd-place pipeline of the 2015 NOAA Right
Whale Recognition challenge: cache -> localize -> align -> crop -> classify ->
stack. See README.md for the quick start.
"""
__version__ = "0.1.0"
