"""Detector networks and what defines their outputs and losses: backbones, the ASFD D0-D6
family, reference detectors, heads, anchors, box coding, matching and losses."""
