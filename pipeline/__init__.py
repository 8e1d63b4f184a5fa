"""javis pipeline: config, Ray Data runner, outputs, audit and CLI."""

__version__ = "0.1.0"
