"""Models trained on the curated shards: the ST-Prior estimator and JavisDiT (JavisDiT paper,
appendix C.1-C.2), their encoders, latent precomputation and Ray Train training."""
