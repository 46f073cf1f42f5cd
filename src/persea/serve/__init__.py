"""Serving the closed model: accounts, money and billing (storage side), the HTTP gateway."""
