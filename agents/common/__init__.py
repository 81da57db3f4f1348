"""agents/common."""
