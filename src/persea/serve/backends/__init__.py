"""Backends: what runs the model behind the gateway (built-in, or an upstream server)."""
