"""HAProxy configuration rendering: 5000 -> primary, 5001 -> replicas, 7000 -> stats."""
