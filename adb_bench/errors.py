"""Device-side failures a user can act on; each message is one line that says what to do."""


class DeviceError(Exception):
    """A problem with adb, the phone or the benchmark binary; the variant becomes a failed row."""


class TransientError(DeviceError):
    """A connection problem that may pass (device offline, connection closed or reset): retried."""


class CommandTimeout(DeviceError):
    """An adb command ran longer than its time limit (the adb client was killed)."""
