#!/usr/bin/env python3
"""paramiko against the sim-fortigate SSH console: an interactive shell (invoke_shell) that
reads each prompt before typing the next line of the seed article's CLI, `?` help, then
exec_command("show firewall policy"). Prints one JSON line; exit 0 when every check held.

Environment: FGT_SSH_PORT, FGT_PASSWORD (user admin on 127.0.0.1).
"""
import json
import os
import sys
import time

import paramiko

PORT = int(os.environ["FGT_SSH_PORT"])
PASSWORD = os.environ["FGT_PASSWORD"]

SEED = [
    ("config firewall address", "FGT-LAB (address) # "),
    ('edit "10.115.2.52/32"', "FGT-LAB (10.115.2.52/32) # "),
    ("set subnet 10.115.2.52 255.255.255.255", "FGT-LAB (10.115.2.52/32) # "),
    ("next", "FGT-LAB (address) # "),
    ("end", "FGT-LAB # "),
    ("config firewall policy", "FGT-LAB (policy) # "),
    ("edit 0", "FGT-LAB (0) # "),
    ('set srcintf "port3"', "FGT-LAB (0) # "),
    ('set dstintf "virtual-wan-link"', "FGT-LAB (0) # "),
    ('set srcaddr "10.115.2.52/32"', "FGT-LAB (0) # "),
    ('set dstaddr "all"', "FGT-LAB (0) # "),
    ("set action accept", "FGT-LAB (0) # "),
    ('set schedule "always"', "FGT-LAB (0) # "),
    ('set service "ALL"', "FGT-LAB (0) # "),
    ("set utm-status enable", "FGT-LAB (0) # "),
    ('set ssl-ssh-profile "certificate-inspection"', "FGT-LAB (0) # "),
    ('set webfilter-profile "monitor-all"', "FGT-LAB (0) # "),
    ("set logtraffic all", "FGT-LAB (0) # "),
    ("set nat enable", "FGT-LAB (0) # "),
    ("next", "FGT-LAB (policy) # "),
    ("config system automation-stitch", "FGT-LAB (automation-stitch) # "),
    ('edit "Compromised Host Quarantine"', "FGT-LAB (Compromised Host Quarantine) # "),
    ('set trigger "Compromised Host Quarantine"', "FGT-LAB (Compromised Host Quarantine) # "),
    (
        'set action "Compromised Host Quarantine_quarantine-forticlient"',
        "FGT-LAB (Compromised Host Quarantine) # ",
    ),
    ("next", "FGT-LAB (automation-stitch) # "),
    ("end", "FGT-LAB # "),
]


def read_until(chan, want, timeout=15.0):
    buf = ""
    deadline = time.monotonic() + timeout
    while not buf.endswith(want):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waiting for {want!r}, got {buf!r}")
        if chan.recv_ready():
            buf += chan.recv(65536).decode("utf-8", "replace")
        else:
            time.sleep(0.01)
    return buf


def main():
    checks = {}
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=PORT, username="admin", password=PASSWORD,
                   look_for_keys=False, allow_agent=False, timeout=15)
    chan = client.invoke_shell()
    read_until(chan, "FGT-LAB # ")
    for line, prompt in SEED:
        chan.send(line + "\r")
        out = read_until(chan, prompt)
        # The echo of the line comes back before the new prompt.
        if not out.startswith(line):
            raise AssertionError(f"no echo of {line!r}: {out!r}")
    # `?` at the start of a line lists the commands; it is not inserted into the line.
    chan.send("?")
    out = read_until(chan, "FGT-LAB # ")
    checks["help_top"] = "config" in out and "diagnose" in out
    chan.send("exit\r")
    chan.close()

    # exec_command on a new channel of the same connection.
    _, stdout, _ = client.exec_command("show firewall policy")
    text = stdout.read().decode()
    status = stdout.channel.recv_exit_status()
    checks["exec_show"] = status == 0 and 'set webfilter-profile "monitor-all"' in text
    _, stdout, _ = client.exec_command("show system automation-stitch | grep -f quarantine-forticlient")
    text = stdout.read().decode()
    checks["exec_grep"] = 'edit "Compromised Host Quarantine"' in text and "<---" in text
    client.close()
    ok = all(checks.values())
    print(json.dumps({"ok": ok, "checks": checks}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
