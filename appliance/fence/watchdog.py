"""The Linux watchdog device (/dev/watchdog: softdog on the VM, a device given to a container): open
starts it, a keepalive ioctl feeds it, writing "V" before close stops it (magic close)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct

# <linux/watchdog.h>: _IOWR('W', 6, int), _IOR('W', 5, int), _IOR('W', 7, int)
WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_KEEPALIVE = 0x80045705
WDIOC_GETTIMEOUT = 0x80045707


class WatchdogError(Exception):
    """The device is missing, not ours, or not a watchdog."""


class Watchdog:
    """One open watchdog device (or none). Every failure raises WatchdogError with the reason."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._fd: int | None = None
        self.timeout: int | None = None

    @property
    def active(self) -> bool:
        return self._fd is not None

    def open(self, timeout: int) -> None:
        """Open (which starts the countdown) and set the timeout; the driver may round it."""
        if self._fd is None:
            try:
                self._fd = os.open(self.device, os.O_WRONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise WatchdogError(f"cannot open {self.device}: {exc.strerror}") from exc
        if self.timeout != timeout:
            try:
                raw = fcntl.ioctl(self._fd, WDIOC_SETTIMEOUT, struct.pack("i", timeout))
                self.timeout = struct.unpack("i", raw)[0]
            except OSError as exc:
                self.close()
                raise WatchdogError(f"{self.device} refused a {timeout}s timeout: {exc.strerror}") from exc

    def keepalive(self) -> None:
        if self._fd is None:
            raise WatchdogError("watchdog not open")
        try:
            fcntl.ioctl(self._fd, WDIOC_KEEPALIVE, struct.pack("i", 0))
        except OSError as exc:
            raise WatchdogError(f"keepalive on {self.device} failed: {exc.strerror}") from exc

    def close(self) -> None:
        """Magic close: the driver stops the countdown (unless built with nowayout)."""
        if self._fd is None:
            return
        fd, self._fd, self.timeout = self._fd, None, None
        with contextlib.suppress(OSError):
            os.write(fd, b"V")
        with contextlib.suppress(OSError):
            os.close(fd)

    def probe(self, timeout: int) -> None:
        """Can this device be used? Open, set the timeout, magic-close. Raises WatchdogError."""
        if self.active:
            return
        self.open(timeout)
        self.close()
