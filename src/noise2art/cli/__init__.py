"""Command-line interface: `noise2art <command>`; one module per command family."""
