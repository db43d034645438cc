#!/bin/sh
# /opt/puppet/bin/puppet of a PE 3.7 master, emulated: Debian's real Puppet 7
# for everything except `puppet cert`, removed in Puppet 6, which goes to the
# stand-in (see /opt/puppet/lib/puppet-cert-standin.rb).
if [ "$1" = cert ]; then
    shift
    exec /usr/bin/ruby /opt/puppet/lib/puppet-cert-standin.rb "$@"
fi
exec /usr/bin/puppet "$@"
