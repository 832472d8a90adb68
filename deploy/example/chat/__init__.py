"""The chat app: rooms, presence, history, a long-poll fallback and a server-sent-event stream."""
