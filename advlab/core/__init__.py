"""What every stage shares, below all of advlab's concepts: errors, atomic file io, the device
and precision, the stage runner, the import closure, timing and the environment record."""
