"""The generation engine: model loading, sampling, detokenization and continuous batching."""
