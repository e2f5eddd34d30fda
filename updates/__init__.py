"""Signed updates: bundles (code, locked dependencies, model manifest, migrations) signed with
ed25519, installed into the inactive of two slots, health-checked, then switched atomically."""
