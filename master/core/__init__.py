"""Primitives shared by the primary and the workers. Nothing here imports anything above it."""
