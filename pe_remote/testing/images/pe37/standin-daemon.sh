#!/bin/sh
# STAND-IN daemon for PE 3.7's pe-activemq and pe-mcollective services: PE's
# ActiveMQ broker and MCollective server are not packaged in Debian. This only
# stays up, so the services can be stopped, started and checked like the real ones.
echo "stand-in for $1 running (pid $$)"
exec sleep infinity
