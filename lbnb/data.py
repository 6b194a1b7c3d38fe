"""Data entry points: the image-set container, the MVTec AD folder layout and the embedded benchmark.

>>> from lbnb import data
>>> train, test = data.load_embedded("brick", random_state=0)      # offline, real photographs
>>> train, test = data.load_folder("/data/mvtec", "bottle")          # your own data, MVTec layout
>>> data.write_folder("/tmp/out", train, test)                        # materialise any set
"""
from .embedded import embedded_categories, load_embedded
from .folder_layout import load_folder, write_folder
from .image_io import read_image, read_mask
from .imageset import GOOD, ImageSet, describe

__all__ = ["GOOD", "ImageSet", "describe", "embedded_categories", "load_embedded", "load_folder", "read_image",
           "read_mask", "write_folder"]
