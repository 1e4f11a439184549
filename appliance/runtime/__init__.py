"""Runtime rendering: supervisord, etcd member and HAProxy configuration from the effective settings."""
