"""Built-in distillers: one module per method."""
