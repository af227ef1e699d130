"""The download and split stages' logic: fetching and verifying the dataset's files (fetch),
reading their formats (formats), the synthetic generator (synthetic), and images as uint8
tensors batched by indexing (images)."""
