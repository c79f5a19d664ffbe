"""Face detection on the search engine, by tier: ``models`` (networks, heads, anchors, losses),
``data`` (annotations, augmentation, loaders), ``evaluation`` (the WIDER FACE and FDDB
protocols), ``engine`` (training, inference, export) and ``workflows`` (the face search task
and the pipelines the CLI calls). A tier imports only those before it."""
