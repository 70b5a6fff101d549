"""R2Former network: backbone, reranker, checkpoint loading."""
