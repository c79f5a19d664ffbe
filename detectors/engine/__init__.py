"""What runs a detector: the training config, the trainer (loop, checkpoints, distributed
set-up, reports, schedule), inference, evaluation of a detector, ONNX export and MACs."""
