"""Measuring a model: clean accuracy and confusion (the test stage), and robust accuracy under
each attack and the worst case over the ensemble (the attack stage) with its metrics files."""
