"""Simulated drives for the demo and the tests: loop devices over tmpfs files, and FUSE fakes
(counterfeit, failing, write-protected) behind loop devices.  Everything here creates its own
devices and removes exactly what it created; nothing here touches a device it did not make."""
