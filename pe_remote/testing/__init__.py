"""Throwaway staging Puppet masters in containers, for pe-remote's tests and for users' CI."""

from pe_remote.testing.master import FLAVORS, ClientKey, MasterNotReady, StagingMaster, start_master

__all__ = ["FLAVORS", "ClientKey", "MasterNotReady", "StagingMaster", "start_master"]
