"""The HTTP edge: what every request passes before it reaches a route."""
