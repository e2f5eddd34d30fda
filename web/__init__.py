"""tingji's web UI and JSON API, served by the box on the LAN."""
