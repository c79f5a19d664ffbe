"""Face data: WIDER FACE / FDDB annotations, a synthetic smoke-test set, augmentation, loaders."""
from detectors.data.augment import AugmentConfig, augment, letterbox
from detectors.data.fddb import FDDBAnnotation, load_fddb, parse_fddb_ellipses
from detectors.data.image import (
    IMAGE_MEAN, IMAGE_STD, MEAN_PIXEL, ImageReadError, load_image, read_image_size, to_tensor,
)
from detectors.data.loader import (
    FaceDetectionDataset, build_dataloader, detection_collate, set_epoch,
)
from detectors.data.synthetic import make_synthetic
from detectors.data.wider import (
    AnnotationError, FaceSample, WiderDataset, check_images, parse_wider_annotations,
)

__all__ = [
    "AugmentConfig", "augment", "letterbox",
    "FDDBAnnotation", "load_fddb", "parse_fddb_ellipses",
    "IMAGE_MEAN", "IMAGE_STD", "MEAN_PIXEL", "ImageReadError", "load_image", "read_image_size",
    "to_tensor",
    "FaceDetectionDataset", "build_dataloader", "detection_collate", "set_epoch",
    "make_synthetic",
    "AnnotationError", "FaceSample", "WiderDataset", "check_images", "parse_wider_annotations",
]
