"""Development tools that check the package itself (not part of the public API)."""
