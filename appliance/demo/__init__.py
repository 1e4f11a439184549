"""The local demo: a three-node cluster plus HAProxy on loopback, run by supervisord, no Docker needed."""
