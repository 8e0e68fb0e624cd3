"""flatkit: flatness of diffusion models' loss surfaces, and what it buys."""

__version__ = "0.1.0"
