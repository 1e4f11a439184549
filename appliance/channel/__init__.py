"""The local channels between a node's processes: files, the typed state document, the intent queue."""
