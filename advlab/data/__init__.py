"""The download and split stages' logic: fetching and verifying the dataset's files, reading
their formats, the synthetic generator, and images as uint8 tensors batched by indexing."""
