"""advlab: train a CNN, evaluate it and attack it with FGSM, as a reproducible DVC pipeline."""
