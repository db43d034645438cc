"""Throwaway staging Puppet masters in containers, for pe-remote's tests and for users' CI.

`pe_remote.testing.master` (start_master, StagingMaster, ...) needs docker and testcontainers
(`pip install pe-remote[test]`); `pe_remote.testing.plugin` is the opt-in pytest plugin. Nothing is
imported here, so importing the plugin does not import docker.
"""
