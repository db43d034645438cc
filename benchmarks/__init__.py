"""pe-remote's benchmarks: `python -m benchmarks` (or `make bench`).

Starts its own staging masters (at most four at once, always stopped again),
measures every figure at least three times in one run, and prints the medians
side by side, each with its target and PASS/FAIL:

- downtime ratio: regen's downtime window / a bare stop-then-start of the same
  services with the same commands on the same master (<= 1.10);
- tool overhead: regen's wall time - downtime - backup time (<= 5 s);
- backup ratio: pe-remote's backup / `ssh master 'tar czf - SSLDIR' > file` with
  the OpenSSH client, on a master whose CA holds 50,000 signed agent certs (<= 1.25);
- fleet ratio: `backup` on 4 masters in parallel / on 1 master (<= 1.5);
- remote commands per regen, and the peak RSS of a real `fab ... regen` process.

See benchmarks/scenarios/ (one module per scenario, its docstring) for how each figure is measured;
benchmarks/run.py runs them in order.
"""
