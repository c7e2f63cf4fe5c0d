"""Shared fixtures. Store fixtures (a real SeaweedFS) live in store_fixtures.py."""
pytest_plugins = ["store_fixtures"]
