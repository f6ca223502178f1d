"""Getting and preparing the dataset: sample, obtain, extract, palette, convert; image decoding,
the dataset class and data identity.
"""
