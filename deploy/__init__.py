"""Deployment recipes and the example application (``deploy.example``)."""
