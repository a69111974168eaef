"""FlightMind: an aviation language model trained from random weights with PyTorch Lightning."""

__version__ = "0.1.0"
