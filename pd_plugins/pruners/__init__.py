"""Built-in pruners: one module per method."""
