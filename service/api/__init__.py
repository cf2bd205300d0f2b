"""The HTTP endpoints, one blueprint per family: hooks (discovery and calls), feedback, health."""
