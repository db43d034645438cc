"""Plain-text views of facts and plans, for `discover` and for the plan shown before a regen."""

from __future__ import annotations

from pe_remote.discovery import MasterFacts
from pe_remote.plan import Plan, Step


def render_facts(facts: MasterFacts, label: str) -> str:
    cert = facts.cert
    services = ", ".join(
        f"{s.name} ({s.state})" for s in facts.services if s.exists) or "none of the known Puppet services"
    lines = [
        f"host:            {label} (hostname {facts.hostname})",
        f"flavor:          {facts.flavor.name} - {facts.flavor.title}",
        f"puppet:          {facts.puppet} ("
        + ", ".join(part for part in (facts.puppet_version and f"version {facts.puppet_version}",
                                      facts.pe_version and f"PE {facts.pe_version}") if part) + ")",
        f"puppetserver:    {facts.puppetserver or 'not found'}",
        f"certname:        {facts.certname}",
        f"dns_alt_names:   {', '.join(facts.dns_alt_names) or '(none)'}",
        f"ssldir:          {facts.ssldir}",
        f"cadir:           {facts.cadir} (CA key {'present' if facts.ca_key_present else 'ABSENT'})",
        f"cached catalog:  {facts.catalog_path}",
        f"services:        {services}",
    ]
    if cert:
        lines += [
            f"cert serial:     {cert.serial}",
            f"cert issuer:     {cert.issuer}",
            f"cert SANs:       {', '.join(sorted(cert.sans)) or '(none)'}",
            f"cert expires:    {cert.not_after}",
            f"cert sha256:     {cert.sha256}",
        ]
    else:
        lines.append(f"cert:            no cert at {facts.hostcert}")
    return "\n".join(lines)


def render_plan(plan: Plan, backup_command: str, label: str) -> str:
    facts = plan.facts
    lines = [
        f"Plan for {label}: regenerate the cert of {facts.certname} ({facts.flavor.title})",
        f"  alt names: {', '.join(plan.alt_names) or '(none)'}",
        *([f"  DROPPED from the current cert (--drop-alt-names): {', '.join(plan.dropped_sans)}"]
          if plan.dropped_sans else []),
        f"  current serial: {facts.cert.serial if facts.cert else '(none)'}",
        f"  path: {plan.path}" + (f" ({plan.path_why})" if plan.path_why else ""),
    ]
    if plan.skipped_services:
        lines.append(f"  not on this host, skipped: {', '.join(plan.skipped_services)}")
    if plan.stopped_services:
        lines.append(f"  already stopped, left stopped: {', '.join(plan.stopped_services)}")
    return "\n".join(lines + [render_steps(plan, backup_command)])


def render_steps(plan: Plan, backup_command: str) -> str:
    """The backup and each step with its remote command and check, in order."""
    lines = []
    lines.append("  remote commands, in order (a step marked 'after' starts as soon as those steps are done, one marked")
    lines.append("  'alongside' at the same time as the step before it):")
    lines.append(f"   0. Back up the SSL directory\n      $ {backup_command}")
    numbers = {step.key: number for number, step in enumerate(plan.steps, start=1)}
    needs = plan.needs()
    follows: tuple[str, ...] = ()  # what a step needs by default: the step listed before it
    previous: Step | None = None
    for number, step in enumerate(plan.steps, start=1):
        after = ""
        if previous is not None and needs[step.key] == needs[previous.key]:
            after = f" (alongside {number - 1})"  # starts when the step before it does
        elif needs[step.key] != follows:
            after = f" (after {', '.join(str(numbers[k]) for k in needs[step.key]) or 'the backup'})"
        follows, previous = (step.key,), step
        lines.append(f"  {number:2d}. {step.title}{after}\n      $ {step.command}")
        if step.check:
            lines.append(f"      check: {step.check}")
    return "\n".join(lines)
