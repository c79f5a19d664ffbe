"""Face data: WIDER FACE / FDDB annotations, a synthetic smoke-test set, augmentation, loaders
(names imported on first use: the annotation parsers need no torch)."""
from nas_search.runtime.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "augment": ("AugmentConfig", "augment", "letterbox"),
    "fddb": ("FDDBAnnotation", "load_fddb", "parse_fddb_ellipses"),
    "image": ("IMAGE_MEAN", "IMAGE_STD", "MEAN_PIXEL", "ImageReadError", "load_image",
              "read_image_size", "to_tensor"),
    "loader": ("DetectionBatch", "FaceDetectionDataset", "build_dataloader", "detection_collate",
               "prepare_batch", "set_epoch"),
    "synthetic": ("make_synthetic",),
    "wider": ("AnnotationError", "FaceSample", "WiderDataset", "check_images",
              "parse_wider_annotations"),
})
