"""pe-remote: regenerate a Puppet master's SSL certificate over SSH."""

__version__ = "0.1.0"
