"""One run's results for people: figures, the HTML report and TensorBoard logs."""
