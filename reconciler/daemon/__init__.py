"""The site daemon: its local configuration, scheduling and triggers, the HTTP endpoints
(health, metrics, webhooks), systemd notification and logging. Drives the engine.
"""
