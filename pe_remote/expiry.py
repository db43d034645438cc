"""End dates: how long the master cert, the CA certs and the CRLs have left.

A remote fact and its parser side by side: `dated_files_command` prints the PEM files as they are
(one section each, base64 so nothing in them can look like a section marker), and `read_dates`
parses them HERE with `cryptography`, not by scraping `openssl -text` on the master (whose format
differs between OpenSSL 1.0, 1.1 and 3). What a generation keeps where comes from the facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from pe_remote.commands import sections as protocol
from pe_remote.commands.certs import common_name, load_certs, pem_blocks
from pe_remote.commands.sections import file_encoded, mark
from pe_remote.discovery import MasterFacts

DEFAULT_WARN_DAYS = 90


@dataclass(frozen=True)
class Dated:
    """One thing that ends: a cert's notAfter or a CRL's nextUpdate."""

    what: str  # "master cert", "CA cert (Puppet CA: x)", "CA CRL", ...
    path: str
    ends: datetime

    def days_left(self, now: datetime) -> float:
        return (self.ends - now).total_seconds() / 86400

    def status(self, now: datetime, warn_days: int) -> str:
        left = self.days_left(now)
        return "EXPIRED" if left <= 0 else ("WARN" if left < warn_days else "ok")


def dated_files(facts: MasterFacts) -> dict[str, str]:
    """Section name -> file: the master cert, the CA bundle, the CA's CRL, the host's CRL copy."""
    return {"hostcert": facts.hostcert, "ca_bundle": f"{facts.cadir}/ca_crt.pem",
            "ca_crl": f"{facts.cadir}/ca_crl.pem", "host_crl": f"{facts.ssldir}/crl.pem"}


def dated_files_command(facts: MasterFacts) -> str:
    return "\n".join(f"{mark(name)}; {file_encoded(path)}" for name, path in dated_files(facts).items())


def read_dates(output: str, facts: MasterFacts) -> list[Dated]:
    """Every end date found in the files (a file that is absent or unreadable is left out)."""
    from cryptography import x509  # installed with paramiko

    files = dated_files(facts)
    dates: list[Dated] = []
    for name, lines in protocol.split(output).items():
        if name not in files:
            continue
        data = protocol.decoded(lines)
        path = files[name]
        if name in ("hostcert", "ca_bundle"):
            for cert in load_certs(data):
                label = "master cert" if name == "hostcert" else f"CA cert ({common_name(cert.subject)})"
                dates.append(Dated(label, path, cert.not_valid_after_utc))
        else:
            for block in pem_blocks(data, b"X509 CRL"):
                try:
                    crl = x509.load_pem_x509_crl(block)
                except ValueError:
                    continue
                if crl.next_update_utc is None:
                    continue
                kind = "CA CRL" if name == "ca_crl" else "host CRL"
                dates.append(Dated(f"{kind} ({common_name(crl.issuer)})", path, crl.next_update_utc))
    return dates


def expiry_problems(dates: list[Dated], now: datetime, warn_days: int) -> list[str]:
    """What has ended or ends within `warn_days` (empty: nothing)."""
    problems = []
    for dated in dates:
        status = dated.status(now, warn_days)
        if status == "EXPIRED":
            problems.append(f"the {dated.what} EXPIRED on {dated.ends:%Y-%m-%d %H:%M} UTC ({dated.path})")
        elif status == "WARN":
            problems.append(f"the {dated.what} ends in {dated.days_left(now):.0f} days, on "
                            f"{dated.ends:%Y-%m-%d} (under --warn-days {warn_days}; {dated.path})")
    return problems


def render_dates(label: str, dates: list[Dated], now: datetime, warn_days: int) -> str:
    rows = [("WHAT", "ENDS (UTC)", "DAYS LEFT", "STATUS", "FILE")]
    rows += [(d.what, f"{d.ends:%Y-%m-%d %H:%M}", f"{d.days_left(now):.0f}", d.status(now, warn_days), d.path)
             for d in dates]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{label}: end dates (warn under {warn_days} days)"]
    lines += ["  " + "  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row))
              for row in rows]
    return "\n".join(lines)


def dates_to_json(dates: list[Dated], now: datetime, warn_days: int) -> list[dict]:
    return [{"what": d.what, "file": d.path, "ends": d.ends.astimezone(timezone.utc).isoformat(),
             "days_left": round(d.days_left(now), 1), "status": d.status(now, warn_days)} for d in dates]
