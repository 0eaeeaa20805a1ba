"""Video data pipeline: decoding, annotations, sampling, transforms, datasets (never imports models)."""
