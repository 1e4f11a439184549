"""The HA loop: observe -> decide -> execute, and the local state it publishes for the API."""
