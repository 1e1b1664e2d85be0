"""Command-line entry points: one module per command. Only these configure logging and print."""
