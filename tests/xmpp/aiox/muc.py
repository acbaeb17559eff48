"""Issue 16 scenarios."""
