"""Shared fixtures. The Firestore emulator harness is a plugin module of its own."""

pytest_plugins = ["tests.firestore_emulator"]
