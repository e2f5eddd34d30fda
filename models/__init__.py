"""The model store: a manifest of models and their offline installation from packages."""
