"""Training images: robust decoding, captions, kohya-style folders, crops and aspect buckets."""

from .dataset import (ImageFolderScan, ImageItem, InstanceDataset, SkippedFile, bucket_batches, check_batch_fits,
                      preview_batch, scan_image_folder, validate_image_batch)
from .images import (IMAGE_SUFFIXES, aspect_buckets, cover_crop, image_to_tensor, load_image, nearest_bucket,
                     read_image_size, to_rgb, validate_resolution)

__all__ = [
    "IMAGE_SUFFIXES", "ImageFolderScan", "ImageItem", "InstanceDataset", "SkippedFile", "aspect_buckets",
    "bucket_batches", "check_batch_fits", "cover_crop", "image_to_tensor", "load_image", "nearest_bucket",
    "preview_batch", "read_image_size", "scan_image_folder", "to_rgb", "validate_image_batch", "validate_resolution",
]
