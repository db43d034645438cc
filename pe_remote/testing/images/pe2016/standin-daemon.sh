#!/bin/sh
# STAND-IN daemon for PE 2016.4's pe-activemq, mcollective, pe-orchestration-services
# and pxp-agent services: PE's ActiveMQ broker, MCollective server, orchestrator and
# PXP agent are not packaged in Debian. This only stays up, so the services can be
# stopped, started and checked like the real ones. It reads no SSL files.
echo "stand-in for $1 running (pid $$)"
exec sleep infinity
