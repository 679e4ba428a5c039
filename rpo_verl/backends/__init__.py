"""Execution backends that plug into verl's own extension points (platforms, engines)."""
