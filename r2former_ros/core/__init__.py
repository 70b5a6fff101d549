"""ROS-free core: model, preprocessing, checkpoints, maps, retrieval, bags."""
