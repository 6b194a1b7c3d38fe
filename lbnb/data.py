"""Data entry points: the image-set container, the MVTec AD folder layout and the embedded benchmark.

>>> from lbnb import data
>>> train, test = data.load_embedded("brick", random_state=0)      # offline, real photographs
>>> train, test = data.load_folder("/data/mvtec", "bottle")          # your own data, MVTec layout
>>> data.write_folder("/tmp/out", train, test)                        # materialise any set
>>> train, test = data.load_dataset("mvtec_ad", "bottle", "data")    # prepared by data_scripts/
"""
from .datasets import DATASETS, PublishedSplits, contaminator
from .datasets import categories as dataset_categories
from .datasets import choose as choose_categories
from .datasets import load as load_dataset
from .embedded import embedded_categories, load_embedded
from .folder_layout import load_folder, write_folder
from .image_io import read_image, read_mask
from .imageset import GOOD, ImageSet, describe

__all__ = ["DATASETS", "GOOD", "ImageSet", "PublishedSplits", "choose_categories", "contaminator", "dataset_categories",
           "describe", "embedded_categories", "load_dataset", "load_embedded", "load_folder", "read_image",
           "read_mask", "write_folder"]
