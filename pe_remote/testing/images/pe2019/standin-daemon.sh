#!/bin/sh
# STAND-IN daemon for PE 2019+'s pxp-agent, pe-orchestration-services,
# pe-console-services, pe-nginx, pe-puppetdb and pe-postgresql: these PE services
# are not packaged in Debian. This only stays up, so the services can be stopped,
# started and checked like the real ones. It reads no SSL files.
echo "stand-in for $1 running (pid $$)"
exec sleep infinity
