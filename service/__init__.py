"""Spine Coding CDS: a CDS Hooks service for spine diagnosis coding."""
from .app import create_app

__all__ = ["create_app"]
