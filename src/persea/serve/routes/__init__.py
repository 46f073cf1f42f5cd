"""The gateway's HTTP routes: the OpenAI API, operations (health, metrics) and admin."""
