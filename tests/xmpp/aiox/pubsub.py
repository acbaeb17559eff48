"""Issue 17 scenarios."""
