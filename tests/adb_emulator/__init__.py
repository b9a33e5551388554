"""Test-only emulated Android device speaking the adb device protocol, and a private adb server."""
