"""The sample project's one model app: notes in rooms, bound to WebSocket groups."""
