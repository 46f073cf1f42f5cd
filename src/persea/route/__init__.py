"""Routing: send each request to the best of several models."""
